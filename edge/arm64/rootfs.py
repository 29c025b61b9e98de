"""The cached Debian arm64 roots: a base like a freshly flashed Raspberry Pi OS Lite 64-bit,
and a device copy of it that the check installs the agent into.

Layout of the cache folder ($GACFLOW_ARM64_CACHE, default ~/.cache/gacflow-arm64; never
inside the repository):
  base/           debootstrap --arch=arm64 --variant=minbase bookworm, plus python3 and
                  sudo (what Pi OS Lite ships with); built once, ~5 min under qemu here
  device/         a fresh copy of base/ per full check, with the agent installed there by
                  the commands of docs/edge.md; the CI test reuses it
  apt-archives/   .deb downloads, bind-mounted into the roots (re-installs are offline-fast)
  pip/            pip's wheel cache, likewise
Raspberry Pi OS Bookworm is Debian bookworm plus Raspberry Pi's kernel, firmware and a
few desktop packages, so the same suite gives the same Python (3.11), glibc and apt names.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from emulation import ArmRoot, unmount_all

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
BASE_STAMP = ".gacflow-base"
# What a flashed Pi OS Lite has before the device guide's first command.
PI_OS_BASE_PACKAGES = ["python3", "sudo"]


def cache_dir() -> Path:
    env = os.environ.get("GACFLOW_ARM64_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "gacflow-arm64"


def binds(cache: Path) -> dict[str, str]:
    """Host cache folders mounted into a root, so downloads happen once."""
    out = {}
    for name, inside in (("apt-archives", "/var/cache/apt/archives"),
                         ("pip", "/root/.cache/pip")):
        (cache / name / "partial" if name == "apt-archives" else cache / name).mkdir(
            parents=True, exist_ok=True)
        out[str(cache / name)] = inside
    return out


def base_ready(cache: Path) -> bool:
    return (cache / "base" / BASE_STAMP).exists()


def build_base(cache: Path, how: str, log: Path) -> Path:
    """debootstrap (first stage on the host, second under qemu) + Pi OS base packages."""
    base, partial = cache / "base", cache / "base.partial"
    if base_ready(cache):
        return base
    if not shutil.which("debootstrap"):
        raise RuntimeError("debootstrap is not installed (apt-get install debootstrap)")
    complete = (partial / "etc" / "debian_version").exists() and not (
        partial / "debootstrap").exists()
    if not complete and partial.exists():
        unmount_all(partial)
        shutil.rmtree(partial)
    if not complete:
        argv = ["debootstrap", "--arch=arm64", "--variant=minbase",
                "--include=ca-certificates", SUITE, str(partial), MIRROR]
        if how == "proot":  # no binfmt: unpack here, run the second stage under proot
            argv.insert(1, "--foreign")
        with open(log, "ab") as sink:
            subprocess.run(argv, check=True, stdout=sink, stderr=subprocess.STDOUT)
        if how == "proot":
            ArmRoot(partial, how).run("/debootstrap/debootstrap --second-stage", log=log)
    root = ArmRoot(partial, how, binds(cache))
    with root.session():
        root.run(f"apt-get update -q && apt-get install -y -q {' '.join(PI_OS_BASE_PACKAGES)}",
                 log=log)
    (partial / BASE_STAMP).write_text(f"{SUITE} arm64 minbase + {PI_OS_BASE_PACKAGES}\n")
    partial.rename(base)
    return base


def fresh_device(cache: Path) -> Path:
    """A new device root: a copy of base/ (the previous device/ is removed first)."""
    device = cache / "device"
    if device.exists():
        unmount_all(device)  # a killed run may have left /dev bound in there
        shutil.rmtree(device)
    subprocess.run(["cp", "-a", "--reflink=auto", str(cache / "base"), str(device)], check=True)
    return device
