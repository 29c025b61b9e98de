"""The edge agent on arm64 under qemu: 3 s of speech per backend, checked on this host.

About a minute where it runs: the Pi 4 CPU model only (the full check adds the Pi 5's
and the microphone path).

Runs `edge/arm64/check.py --reuse-device` on the device root that the full check
(`edge/arm64/check.sh`, ~20 min the first time: debootstrap under qemu, the guide's apt
and pip installs) left in the cache folder: only the current gacflow wheel is reinstalled
there, then the agent streams to a mosquitto on this host's loopback and the host's
receiver decodes it. Skipped, with the reason, when there is no emulation (no qemu-aarch64
binfmt handler and no proot), when not root (chroot and bind mounts), or when no device
root is cached. A fresh CI machine has none, and the test does not build one: the build
needs ~20 minutes and both registries, more than the whole CI budget allows; the full
check is a benchmark (bench/results/arm64.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "edge" / "arm64"))

import check  # noqa: E402
import emulation  # noqa: E402
import rootfs  # noqa: E402


def why_not() -> str | None:
    if emulation.binfmt_ready():
        if os.geteuid() != 0:
            return "the arm64 check needs root (chroot, bind mounts)"
    elif not emulation.proot_ready():
        return ("no arm64 emulation: no qemu-aarch64 binfmt handler and no proot (run "
                "edge/arm64/check.sh once as root: it installs qemu-user-static and proot)")
    device = rootfs.cache_dir() / "device"
    if not (device / check.INSTALLED_STAMP).exists():
        return (f"no installed arm64 device root in {device}: edge/arm64/check.sh builds it "
                "(~20 min, root, Debian and PyPI registries); CI does not build it")
    return None


@pytest.mark.skipif(why_not() is not None, reason=why_not() or "")
def test_agent_on_arm64_matches_x86(tmp_path: Path) -> None:
    out = tmp_path / "arm64.json"
    done = subprocess.run([sys.executable, str(ROOT / "edge" / "arm64" / "check.py"),
                           "--reuse-device", "--seconds", "3", "--cpus", "pi4", "--no-mic",
                           "--no-report", "--json", str(out)],
                          capture_output=True, text=True, timeout=900)
    assert out.exists(), done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["machine"] == "aarch64" and not result["torch_installed"]
    assert {b["backend"] for b in result["backends"]} == set(check.BACKENDS)
    for b in result["backends"]:
        assert b["delivered"], b
        assert not b["torch_in_importtime"], b
        assert b["agreement"] >= 0.99 and b["tokens_compared"] == b["x86_frames"] == 75, b
    assert result["ok"] and done.returncode == 0, done.stdout[-3000:]
