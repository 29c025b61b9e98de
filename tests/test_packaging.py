"""The edge install stays light: `gacflow[edge]` resolves no torch, and imports without it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]


def test_edge_extra_declares_no_torch() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = project["dependencies"] + project["optional-dependencies"]["edge"]
    assert not any(r.lower().startswith("torch") for r in reqs)


@pytest.mark.skipif(os.environ.get("GACFLOW_SKIP_VENV_TEST") == "1", reason="asked to skip")
def test_fresh_venv_edge_install_has_no_torch(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", f"{ROOT}[edge]"], check=True,
                   timeout=900)
    code = ("import importlib.util, sys, gacflow, gacflow.edge, gacflow.bitstream;"
            "assert importlib.util.find_spec('torch') is None, 'torch installed';"
            "assert 'torch' not in sys.modules; print(gacflow.__version__)")
    out = subprocess.run([str(py), "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
