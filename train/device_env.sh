# Sourced by the scripts that run on a rented GPU machine (train/gpu_lease.sh,
# bench/gpu_cloud.sh), whose python already has torch but not our other packages:
# installs the wheels carried in $WHEELS (default .whl/, no network), then makes `gacflow`
# importable from this checkout's folders (pyproject's package-dir map, as symlinks) when it
# is not installed. Expects PY (the python to use).
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WHEELS=${WHEELS:-$root/.whl}
if ls "$WHEELS"/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$WHEELS"/*.whl || exit 1
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
if ! $PY -c "import gacflow.train" 2>/dev/null; then  # the package by its folders, no install
  pkg=/tmp/gacflow-pkg/gacflow
  mkdir -p "$pkg"
  for f in "$root"/sdk/*; do ln -sfn "$f" "$pkg/"; done
  for d in train export evaluate:eval edge cloud; do ln -sfn "$root/${d%%:*}" "$pkg/${d##*:}"; done
  export PYTHONPATH=/tmp/gacflow-pkg${PYTHONPATH:+:$PYTHONPATH}
fi
