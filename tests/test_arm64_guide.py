"""The device guide's fixed parts, without an arm64 root: the systemd unit, the install block.

`systemd-analyze verify` needs the unit's ExecStart binary and the targets it names to
exist, so it runs with `--root` on a temporary root that holds this host's unit files
and a stand-in for /opt/gacflow/venv/bin/gacflow-edge; any warning fails the test.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "examples" / "edge" / "gacflow-edge.service"
sys.path.insert(0, str(ROOT / "edge" / "arm64"))

import check  # noqa: E402


def systemd_units() -> Path | None:
    for d in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")):
        if (d / "multi-user.target").exists():
            return d
    return None


@pytest.mark.skipif(shutil.which("systemd-analyze") is None or systemd_units() is None,
                    reason="systemd is not installed (./run setup installs it)")
def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    root = tmp_path / "root"
    exe = root / "opt" / "gacflow" / "venv" / "bin" / "gacflow-edge"
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    (root / "usr" / "lib" / "systemd").mkdir(parents=True)
    shutil.copytree(systemd_units(), root / "usr" / "lib" / "systemd" / "system", symlinks=True)
    (root / "etc" / "systemd" / "system").mkdir(parents=True)
    shutil.copy(UNIT, root / "etc" / "systemd" / "system" / UNIT.name)
    out = subprocess.run(["systemd-analyze", "verify", f"--root={root}", UNIT.name],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and not out.stderr.strip() and not out.stdout.strip(), \
        out.stderr + out.stdout


def test_unit_runs_what_the_guide_installs() -> None:
    unit = UNIT.read_text()
    cmds = check.doc_install_commands()
    venv = next(c.split()[-1] for c in cmds if " -m venv " in c)
    assert f"ExecStart={venv}/bin/gacflow-edge " in unit
    user = next(c.split()[-1] for c in cmds if "useradd" in c)
    assert f"User={user}" in unit and "StateDirectory=gacflow-edge" in unit


def test_install_block_installs_both_extras_from_the_built_wheel() -> None:
    """The lines the arm64 check runs: the venv's pip, the one wheel, [edge] and [edge-tflite]."""
    cmds = check.doc_install_commands()
    pips = [c for c in cmds if "/bin/pip install" in c]
    assert [c.rsplit("[", 1)[1].rstrip("]'") for c in pips] == ["edge", "edge-tflite"]
    assert all("gacflow-0.1.0-py3-none-any.whl[" in c for c in pips)
    assert not any("doc-check" in c or "#" in c for c in cmds)
    mic = check.doc_install_commands(check.MIC_MARK)
    assert any("portaudio19-dev" in c for c in mic) and any("[mic]" in c for c in mic)


def test_old_pi_page_points_at_the_guide() -> None:
    """One install guide: the examples page only points at docs/edge.md."""
    page = (ROOT / "examples" / "edge" / "INSTALL-raspberry-pi.md").read_text()
    assert "docs/edge.md" in page and "pip install" not in page
