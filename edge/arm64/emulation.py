"""Run commands inside a Debian arm64 root on an x86_64 host, through qemu-user.

Two ways, tried in order:
- chroot: needs root and the kernel's binfmt_misc to hand aarch64 ELF files to
  `qemu-aarch64-static`. If `/proc/sys/fs/binfmt_misc` is not mounted or the handler is
  not registered, `ensure_binfmt()` mounts it and registers the handler with the `F` flag
  (the interpreter is opened at registration, so it works inside any chroot).
- proot: `proot -q qemu-aarch64-static` intercepts execve itself; no binfmt, no root
  (slower: every syscall goes through ptrace).

Why a module of its own: the check (check.py), its CI test and the root builder all need
the same "is emulation here, and how" answer, with one reason string when it is not.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")
QEMU = "/usr/bin/qemu-aarch64-static"
# The ELF header of an aarch64 executable and its mask (the kernel's binfmt_misc format).
_MAGIC = r"\x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00"
_MASK = r"\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff"
# Inside the root: what a login shell on Raspberry Pi OS would have.
ROOT_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": "/root", "LANG": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive",
            "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_PROGRESS_BAR": "off"}


_CORE = ("processor\t: {i}\nBogoMIPS\t: {bogo}\nFeatures\t: {features}\nCPU implementer\t: 0x41\n"
         "CPU architecture: 8\nCPU variant\t: {variant}\nCPU part\t: {part}\n"
         "CPU revision\t: {rev}\n\n")


@dataclass(frozen=True)
class CpuModel:
    """A Pi's CPU for qemu (`-cpu`, its instruction-set features) and the /proc/cpuinfo
    that board's kernel shows. qemu-user passes the *host's* x86 /proc/cpuinfo through,
    and ONNX Runtime's cpuinfo library crashes parsing it (SIGSEGV at import), so the
    check bind-mounts the board's text over it."""

    board: str
    qemu: str
    part: str
    variant: str
    rev: int
    bogo: str
    features: str
    hardware: str

    def cpuinfo(self) -> str:
        cores = "".join(_CORE.format(i=i, bogo=self.bogo, features=self.features,
                                     variant=self.variant, part=self.part, rev=self.rev)
                        for i in range(4))
        return cores + f"Hardware\t: {self.hardware}\nModel\t\t: {self.board}\n"


CPUS = {
    "pi4": CpuModel("Raspberry Pi 4 Model B", "cortex-a72", "0xd08", "0x0", 3, "108.00",
                    "fp asimd evtstrm crc32 cpuid", "BCM2835"),
    "pi5": CpuModel("Raspberry Pi 5 Model B", "cortex-a76", "0xd0b", "0x4", 1, "108.00",
                    "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid "
                    "asimdrdm lrcpc dcpop asimddp", "BCM2835"),
}


class EmulationUnavailable(RuntimeError):
    """No way to run aarch64 binaries here; the message says why, in one line."""


def _binfmt_entry() -> Path:
    return BINFMT_DIR / "qemu-aarch64"


def binfmt_ready() -> bool:
    """True when the kernel hands aarch64 ELF files to qemu, chroot-proof (flag F)."""
    entry = _binfmt_entry()
    try:
        text = entry.read_text()
    except OSError:
        return False
    flags = next((ln.split(":", 1)[1] for ln in text.splitlines() if ln.startswith("flags")), "")
    return text.startswith("enabled") and "F" in flags


def ensure_binfmt() -> str | None:
    """Mount binfmt_misc and register qemu-aarch64 if needed; None, or why it failed."""
    if binfmt_ready():
        return None
    if os.geteuid() != 0:
        return "binfmt_misc needs root to mount and register"
    if not Path(QEMU).exists():
        return f"{QEMU} is missing (apt-get install qemu-user-static)"
    if not (BINFMT_DIR / "register").exists():
        done = subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT_DIR)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            return f"cannot mount binfmt_misc ({done.stderr.strip() or done.returncode})"
    if _binfmt_entry().exists():  # registered without F (e.g. binfmt-support's P flag)
        try:
            _binfmt_entry().write_text("-1")
        except OSError as exc:
            return f"cannot replace the qemu-aarch64 binfmt entry ({exc.strerror})"
    line = f":qemu-aarch64:M::{_MAGIC}:{_MASK}:{QEMU}:OCF"
    try:
        (BINFMT_DIR / "register").write_text(line)
    except OSError as exc:
        return f"cannot register qemu-aarch64 with binfmt_misc ({exc.strerror})"
    return None if binfmt_ready() else "qemu-aarch64 registered but not enabled"


def proot_ready() -> bool:
    return shutil.which("proot") is not None and Path(QEMU).exists()


@dataclass
class ArmRoot:
    """A Debian arm64 root folder and the way (chroot or proot) to run commands in it."""

    path: Path
    how: str  # "chroot" or "proot"
    binds: dict[str, str] = field(default_factory=dict)  # host folder -> path inside
    cpuinfo: Path | None = None  # host file shown as /proc/cpuinfo (see CpuModel)
    cpu: CpuModel | None = None
    _mounted: list[Path] = field(default_factory=list)

    def set_cpu(self, cpu: CpuModel) -> None:
        """Emulate this board's CPU from now on (QEMU_CPU; its /proc/cpuinfo, rewritten in
        place so that the bind mount shows the new text)."""
        self.cpu = cpu
        if self.cpuinfo is not None:
            with open(self.cpuinfo, "r+" if self.cpuinfo.exists() else "w") as f:
                f.write(cpu.cpuinfo())
                f.truncate()

    def command(self, script: str, cwd: str = "/root") -> list[str]:
        """argv that runs `script` with bash inside the root."""
        if self.how == "chroot":
            return ["chroot", str(self.path), "/bin/bash", "-c", f"cd {cwd} && {script}"]
        argv = ["proot", "-0", "-q", QEMU, "-r", str(self.path), "-w", cwd,
                "-b", "/proc", "-b", "/dev", "-b", "/sys", "-b", "/etc/resolv.conf"]
        for host, inside in self.binds.items():
            argv += ["-b", f"{host}:{inside}"]
        if self.cpuinfo is not None:
            argv += ["-b", f"{self.cpuinfo}:/proc/cpuinfo"]
        return [*argv, "/bin/bash", "-c", script]

    def _env(self, env: Mapping[str, str] | None) -> dict[str, str]:
        full = dict(ROOT_ENV, **(env or {}))
        if self.cpu is not None:
            full["QEMU_CPU"] = self.cpu.qemu
        return full

    def run(self, script: str, *, cwd: str = "/root", env: Mapping[str, str] | None = None,
            timeout: float = 3600, log: Path | None = None,
            check: bool = True) -> subprocess.CompletedProcess:
        """Run a bash script inside the root; output to `log` (appended) or captured."""
        full_env = self._env(env)
        sink = open(log, "ab") if log else None  # noqa: SIM115 - closed below
        try:
            if sink:
                sink.write(f"\n$ {script}\n".encode())
                sink.flush()
            done = subprocess.run(self.command(script, cwd), env=full_env, timeout=timeout,
                                  stdout=sink or subprocess.PIPE,
                                  stderr=subprocess.STDOUT if sink else subprocess.PIPE)
        finally:
            if sink:
                sink.close()
        if check and done.returncode != 0:
            where = f"; see {log}" if log else f": {(done.stderr or b'').decode()[-800:]}"
            raise RuntimeError(f"arm64 root: `{script}` failed with exit {done.returncode}{where}")
        return done

    def share_host_network_config(self) -> None:
        """DNS, the host name (sudo looks it up) and the host's CA bundle: where the host
        reaches PyPI through a TLS-inspecting proxy, the root must trust its CA too (on a
        plain machine the host bundle is Debian's, the same as the root's)."""
        for name in ("resolv.conf", "hosts", "ssl/certs/ca-certificates.crt"):
            try:
                shutil.copy(f"/etc/{name}", self.path / "etc" / name)
            except (OSError, shutil.SameFileError):
                pass

    def popen(self, script: str, *, cwd: str = "/root", env: Mapping[str, str] | None = None,
              log: Path | None = None) -> subprocess.Popen:
        """Start `exec <script>` in the root: the process that gets signals is the program
        itself (SIGTERM to the Popen reaches it through qemu), not a shell around it."""
        sink = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - child keeps it
        try:
            return subprocess.Popen(self.command(f"exec {script}", cwd),
                                    env=self._env(env), stdout=sink,
                                    stderr=subprocess.STDOUT)
        finally:
            if log:
                sink.close()

    @contextmanager
    def session(self) -> Iterator[ArmRoot]:
        """Mount /proc, /dev, /sys and the cache binds for chroot (proot binds per call)."""
        self.share_host_network_config()
        if self.how != "chroot":
            yield self
            return
        pairs = [("proc", "/proc"), ("/dev", "/dev"), ("/dev/pts", "/dev/pts"),
                 ("sysfs", "/sys")] + list(self.binds.items())
        if self.cpuinfo is not None:
            if not self.cpuinfo.exists():
                self.set_cpu(self.cpu or CPUS["pi4"])
            pairs.append((str(self.cpuinfo), "/proc/cpuinfo"))
        try:
            for src, inside in pairs:
                target = self.path / inside.lstrip("/")
                if inside != "/proc/cpuinfo":
                    target.mkdir(parents=True, exist_ok=True)
                if src in ("proc", "sysfs"):
                    argv = ["mount", "-t", src, src, str(target)]
                else:
                    argv = ["mount", "--bind", src, str(target)]
                subprocess.run(argv, check=True, capture_output=True)
                self._mounted.append(target)
            yield self
        finally:
            while self._mounted:
                subprocess.run(["umount", "-l", str(self._mounted.pop())], capture_output=True)


def mounts_under(path: Path) -> list[Path]:
    """Mount points at or below `path` (deepest first), from /proc/mounts."""
    top = path.resolve()
    found = []
    for line in Path("/proc/mounts").read_text().splitlines():
        target = Path(line.split()[1].replace("\\040", " "))
        if target == top or top in target.parents:
            found.append(target)
    return sorted(found, key=lambda t: len(t.parts), reverse=True)


def unmount_all(path: Path) -> None:
    """Unmount everything below `path`; RuntimeError if any stays (never delete through it)."""
    for target in mounts_under(path):
        subprocess.run(["umount", "-l", str(target)], capture_output=True)
    left = mounts_under(path)
    if left:
        raise RuntimeError(f"still mounted under {path}: {', '.join(map(str, left))}")


def pick_method() -> str:
    """'chroot' or 'proot'; EmulationUnavailable with the reason when neither works."""
    why = ensure_binfmt()
    if why is None and os.geteuid() == 0 and shutil.which("chroot"):
        return "chroot"
    if proot_ready():
        return "proot"
    raise EmulationUnavailable(
        f"no arm64 emulation: {why or 'chroot needs root'}, and proot/qemu-aarch64-static "
        "are not installed (apt-get install qemu-user-static proot)")
