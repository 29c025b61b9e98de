"""An edge install (`gacflow[edge]`, no torch) never shows a traceback.

Every console script's --help works, `gacflow encode` picks the INT8 onnx backend, and
each command that needs torch says in one stderr line which extra to install (exit 2).
The fast tests hide torch and tensorflow from a subprocess with a `sitecustomize` import
blocker; the slow one installs `.[edge]` into a fresh venv and runs the same checks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import tomllib

from gacflow import extras
from gacflow.backends import resolve_backend
from gacflow.bundle import Bundle
from gacflow.cli.main import main as gacflow_main

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sdk" / "samples" / "speech_ru.wav"
BUNDLE = ROOT / "sdk" / "bundles" / "default"
SCRIPTS: dict[str, str] = {  # console script -> module whose main() it calls
    name: target.split(":")[0]
    for name, target in tomllib.loads((ROOT / "pyproject.toml").read_text())
    ["project"]["scripts"].items()
}
TRAIN_SUBCOMMANDS = ("corpus", "synth", "fit", "pack", "slim", "voice-fit", "envelope-fit",
                     "entropy-fit", "recognizer", "bundle", "add-decoder")

BLOCKER = '''\
"""Test shim: make torch and tensorflow look uninstalled, as on an edge install."""
import sys


class _Hide:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "tensorflow"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, _Hide())
'''

# Runs every --help in one interpreter (cheap); prints [script, argv, exit code, out, err].
HELP_DRIVER = '''\
import contextlib, importlib, io, json, sys, traceback
results = []
for script, module, argv in json.loads(sys.argv[1]):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = importlib.import_module(module).main(argv)
        except SystemExit as exc:
            code = exc.code
        except BaseException:
            traceback.print_exc()
            code = "traceback"
    results.append([script, argv, code, out.getvalue(), err.getvalue()])
results.append(["torch imported", [], "torch" in sys.modules, "", ""])
print(json.dumps(results))
'''


def help_cases() -> list[tuple[str, list[str]]]:
    cases = [(script, ["--help"]) for script in SCRIPTS]
    cases += [("gacflow", [cmd, "--help"]) for cmd in ("encode", "decode", "info", "demo", "eval")]
    cases += [("gacflow", ["demo", "--offline", "--help"]),
              ("gacflow-cloud", ["redecode", "--help"])]
    cases += [("gacflow-train", [cmd, "--help"]) for cmd in TRAIN_SUBCOMMANDS]
    return cases


def needs_extra_cases(tmp: Path, gac: Path) -> list[tuple[str, list[str]]]:
    """Commands an edge install cannot run: each must name the extra to install."""
    return [
        ("gacflow", ["decode", str(gac), str(tmp / "y.wav")]),
        ("gacflow", ["encode", "--backend", "torch", str(SAMPLE), str(tmp / "t.gac")]),
        ("gacflow", ["demo", "--offline", "--out", str(tmp / "demo")]),
        ("gacflow", ["demo"]),
        ("gacflow", ["eval"]),
        ("gacflow-cloud", ["--broker", "mqtt://127.0.0.1:1", "--out", str(tmp / "rx")]),
        ("gacflow-cloud", ["redecode", "--archive", str(gac), "--out", str(tmp / "re")]),
        ("gacflow-export", [str(BUNDLE), "--out", str(tmp / "bundle")]),
        ("gacflow-train", ["fit", "--run", str(tmp / "run")]),
    ]


Runner = Callable[[str, list[str]], subprocess.CompletedProcess]


def blocked_runner(tmp: Path) -> tuple[Runner, Callable[[list], list]]:
    """Run scripts with this interpreter, torch hidden by a sitecustomize on PYTHONPATH."""
    shim = tmp / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(BLOCKER)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (str(shim), os.environ.get("PYTHONPATH", "")) if p))

    def run(script: str, argv: list[str]) -> subprocess.CompletedProcess:
        code = f"import sys; from {SCRIPTS[script]} import main; sys.exit(main())"
        return subprocess.run([sys.executable, "-c", code, *argv], capture_output=True,
                              text=True, env=env, cwd=tmp, timeout=300)

    def helps(cases: list) -> list:
        return _drive(sys.executable, cases, env, tmp)

    return run, helps


def _drive(python: str, cases: list, env: dict, cwd: Path) -> list:
    payload = json.dumps([[s, SCRIPTS[s], argv] for s, argv in cases])
    out = subprocess.run([python, "-c", HELP_DRIVER, payload], capture_output=True, text=True,
                         env=env, cwd=cwd, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.splitlines()[-1])


def check_helps(results: list) -> None:
    *cases, (_, _, torch_imported, _, _) = results
    bad = [f"{s} {' '.join(a)}: exit {c}\n{e}" for s, a, c, o, e in cases
           if c not in (0, None) or "Traceback" in e or not o.strip()]
    assert not bad, "\n".join(bad)
    assert not torch_imported


def check_encode(run: Runner, tmp: Path) -> Path:
    gac = tmp / "y.gac"
    out = run("gacflow", ["encode", str(SAMPLE), str(gac)])
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr
    assert "backend onnx" in out.stdout and gac.stat().st_size > 0
    return gac


def check_needs_extra(run: Runner, tmp: Path, gac: Path) -> None:
    bad = []
    for script, argv in needs_extra_cases(tmp, gac):
        out = run(script, argv)
        lines = out.stderr.strip().splitlines()
        if (out.returncode != 2 or len(lines) != 1 or "Traceback" in out.stderr
                or "pip install" not in out.stderr):
            bad.append(f"{script} {' '.join(argv)}: exit {out.returncode}\n{out.stderr}")
    assert not bad, "\n".join(bad)


@pytest.fixture(scope="module")
def blocked(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("edge-install")
    return (tmp, *blocked_runner(tmp))


def test_every_script_is_covered() -> None:
    assert set(SCRIPTS) == {"gacflow", "gacflow-edge", "gacflow-cloud", "gacflow-export",
                            "gacflow-train"}


def test_blocker_hides_torch(blocked) -> None:
    tmp, _, _ = blocked
    env = dict(os.environ, PYTHONPATH=str(tmp / "shim"))
    out = subprocess.run([sys.executable, "-c", "import torch"], capture_output=True, text=True,
                         env=env, cwd=tmp)
    assert out.returncode != 0 and "No module named 'torch'" in out.stderr


def test_help_without_torch(blocked) -> None:
    _, _, helps = blocked
    check_helps(helps(help_cases()))


def test_encode_defaults_to_onnx_and_torch_commands_name_the_extra(blocked) -> None:
    tmp, run, _ = blocked
    gac = check_encode(run, tmp)
    check_needs_extra(run, tmp, gac)


def test_auto_backend_prefers_torch_then_onnx(monkeypatch: pytest.MonkeyPatch) -> None:
    bundle = Bundle.load(None, verify=False)
    assert resolve_backend(bundle, "auto") == "torch"
    assert resolve_backend(bundle, "tflite") == "tflite"
    monkeypatch.setattr("gacflow.backends.installed", lambda m: m != "torch")
    assert resolve_backend(bundle, "auto") == "onnx"


def test_require_names_the_extra() -> None:
    extras.require("numpy", "edge", "anything")
    assert not extras.installed("no_such_module_gacflow")
    assert not extras.installed("no_such_parent.child")
    with pytest.raises(extras.MissingExtraError, match=r"pip install 'gacflow\[cloud\]'"):
        extras.require("no_such_module_gacflow", "cloud", "decode")


def test_encode_with_torch_says_backend(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert gacflow_main(["encode", str(SAMPLE), str(tmp_path / "a.gac")]) == 0
    assert "backend torch" in capsys.readouterr().out


@pytest.mark.slow
def test_fresh_edge_venv(tmp_path: Path) -> None:
    """The real thing: `pip install .[edge]` in a new venv, then the same checks."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", f"{ROOT}[edge]"], check=True,
                   timeout=1200)
    assert subprocess.run([str(py), "-c", "import torch"], capture_output=True).returncode != 0
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

    def run(script: str, argv: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run([str(venv / "bin" / script), *argv], capture_output=True,
                              text=True, env=env, cwd=tmp_path, timeout=300)

    check_helps(_drive(str(py), help_cases(), env, tmp_path))
    gac = check_encode(run, tmp_path)
    check_needs_extra(run, tmp_path, gac)
