# Sourced by the lease scripts: make `gacflow` importable from the checkout's folders
# (pyproject's package-dir map, as symlinks) when it is not installed, e.g. on a rented
# GPU machine whose python already has torch.
if ! ${PY:-python3} -c "import gacflow.train" 2>/dev/null; then  # the package by its folders, no install
  pkg=/tmp/gacflow-pkg/gacflow
  mkdir -p "$pkg"
  for f in "$PWD"/sdk/*; do ln -sfn "$f" "$pkg/"; done
  for d in train export evaluate:eval edge cloud; do ln -sfn "$PWD/${d%%:*}" "$pkg/${d##*:}"; done
  export PYTHONPATH=/tmp/gacflow-pkg:$PYTHONPATH
fi
