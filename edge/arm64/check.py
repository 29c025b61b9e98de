"""The edge agent on arm64: install it as docs/edge.md says into a Debian arm64 root, run it
under qemu against a mosquitto on this host's loopback, and check on this host what the
receiver got.

    edge/arm64/check.sh                       # full check (fresh device root), writes the report
    edge/arm64/check.sh --reuse-device --seconds 3 --no-report   # what the CI test runs

Why: nothing else in the project runs on an Arm CPU, and the agent is what users flash
onto Raspberry Pi-class boards. The device-side install lines are read out of the
`<!-- arm64-check: install -->` block of docs/edge.md and run verbatim (as root, with
sudo, in the root's /root where the copied wheel lies), so the guide and the check cannot
drift apart. Per backend (onnx, tflite) the agent's tokens are compared with the same
agent's on this x86_64 host: tokens, not packet bytes, so a header change elsewhere does
not matter. Emulated speed is not Pi speed: qemu's encoder RTF is reported only as what
it is; see BENCHMARKS.md for the Pi estimate.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO / "tests"))

import rootfs  # noqa: E402
from broker import Mosquitto  # noqa: E402
from emulation import CPUS, ArmRoot, EmulationUnavailable, pick_method  # noqa: E402

DOC = REPO / "docs" / "edge.md"
INSTALL_MARK = "<!-- arm64-check: install -->"
MIC_MARK = "<!-- arm64-check: mic-install -->"
DEVICE_HOME = "/root"  # the commands run here, next to the copied wheel
VENV = "/opt/gacflow/venv"
BACKENDS = ("onnx", "tflite")
WHEELS_OF_INTEREST = ("onnxruntime", "ai-edge-litert", "tflite-runtime", "numpy", "soxr",
                      "soundfile", "paho-mqtt", "gacflow")
INSTALLED_STAMP = ".gacflow-installed"
SAMPLE = REPO / "sdk" / "samples" / "speech_ru.wav"
# Same flags on both machines; energy VAD: silero-vad is an optional extra install.
AGENT_FLAGS = ["--vad", "energy", "--threads", "1", "--log-level", "warning",
               "--status-interval", "5", "--drain-timeout", "60"]


def say(msg: str) -> None:
    print(f"[arm64 {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def doc_install_commands(mark: str = INSTALL_MARK, doc: Path = DOC) -> list[str]:
    """The command lines of the first shell block after `mark` in docs/edge.md (comment
    lines and trailing `# ...` comments dropped, `\\` continuations joined)."""
    text = doc.read_text()
    if mark not in text:
        raise SystemExit(f"{doc}: no `{mark}` marker before a device install block")
    after = text.split(mark, 1)[1]
    m = re.search(r"```(?:sh|bash)\n(.*?)```", after, re.S)
    if not m:
        raise SystemExit(f"{doc}: no ```sh block after `{mark}`")
    out, pending = [], ""
    for raw in m.group(1).splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        line = re.sub(r"\s+#\s.*$", "", pending + line).strip()
        pending = ""
        out.append(line)
    return out


def build_wheel(dest: Path) -> Path:
    """The build-machine command of docs/edge.md (`pip wheel . --no-deps`), into `dest`."""
    shutil.rmtree(dest, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "-w", str(dest), "-q"],
                   cwd=REPO, check=True)
    wheels = sorted(dest.glob("gacflow-*.whl"))
    if len(wheels) != 1:
        raise RuntimeError(f"pip wheel wrote {[w.name for w in wheels]}, expected one wheel")
    return wheels[0]


@dataclass
class BackendResult:
    backend: str
    exit_code: int
    seconds_wall: float
    cpu: str = "pi4"  # emulation.CPUS key: the board whose CPU qemu emulates
    frames: int = 0
    packets_made: int = 0
    packets_acked: int = 0
    packets_received: int = 0
    seq_complete: bool = False
    eos_received: bool = False
    session_frames: int = 0
    gaps: int = 0
    lost_frames: int = 0
    wav_seconds: float = 0.0
    tokens_compared: int = 0
    tokens_equal: int = 0
    x86_frames: int = 0
    qemu_encoder_rtf: float = 0.0
    x86_encoder_rtf: float = 0.0
    torch_in_importtime: bool = True
    error: str = ""

    @property
    def agreement(self) -> float:
        return self.tokens_equal / self.tokens_compared if self.tokens_compared else 0.0

    @property
    def delivered(self) -> bool:
        return (self.exit_code == 0 and self.packets_made > 0
                and self.packets_made == self.packets_acked == self.packets_received
                and self.seq_complete and self.eos_received and self.gaps == 0
                and self.lost_frames == 0)

    @property
    def ok(self) -> bool:
        return (self.delivered and not self.torch_in_importtime and self.agreement >= 0.99
                and self.tokens_compared == self.x86_frames == self.frames and not self.error)


@dataclass
class Report:
    method: str
    seconds_audio: float
    python: str = ""
    machine: str = ""
    wheels: dict[str, str] = field(default_factory=dict)
    venv_bytes: int = 0
    site_packages: dict[str, int] = field(default_factory=dict)
    torch_installed: bool = True
    install_commands: list[str] = field(default_factory=list)
    install_seconds: float = 0.0
    reused_device: bool = False
    backends: list[BackendResult] = field(default_factory=list)
    mic: MicResult | None = None
    armv7: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return (not self.torch_installed and self.machine == "aarch64"
                and bool(self.backends) and all(b.ok for b in self.backends)
                and (self.mic is None or self.mic.ok))

    def to_json(self) -> dict:
        d = asdict(self)
        for b, out in zip(self.backends, d["backends"], strict=True):
            out.update(agreement=b.agreement, delivered=b.delivered, ok=b.ok)
        if self.mic is not None:
            d["mic"].update(ok=self.mic.ok)
        d["ok"] = self.ok
        return d


# --- the device side --------------------------------------------------------------------
def install(root: ArmRoot, wheel: Path, log: Path, reuse: bool,
            mic: bool) -> tuple[list[str], float]:
    """Copy the wheel in; run the guide's install blocks (or only refresh gacflow on reuse)."""
    home = root.path / DEVICE_HOME.lstrip("/")
    for old in home.glob("gacflow-*.whl"):
        old.unlink()
    shutil.copy(wheel, home / wheel.name)
    t0 = time.monotonic()
    if reuse:
        cmds = [f"{VENV}/bin/pip install -q --no-deps --force-reinstall {wheel.name}"]
    else:
        cmds = doc_install_commands() + (doc_install_commands(MIC_MARK) if mic else [])
    for i, cmd in enumerate(cmds, 1):
        say(f"install {i}/{len(cmds)}: {cmd}")
        root.run(cmd, cwd=DEVICE_HOME, log=log, timeout=3600)
    if not reuse:
        (root.path / INSTALLED_STAMP).write_text("\n".join(cmds) + "\n")
    return cmds, time.monotonic() - t0


PROBE = r'''
import importlib.metadata as md, importlib.util, json, os, platform, sys, sysconfig
site = sysconfig.get_paths()["purelib"]
wheels = {}
for d in md.distributions():
    name = d.metadata["Name"].lower().replace("_", "-")
    tags = [ln.split(":", 1)[1].strip() for ln in (d.read_text("WHEEL") or "").splitlines()
            if ln.startswith("Tag:")]
    wheels[name] = f"{d.version} ({', '.join(tags) or 'no tag'})"
sizes = {}
for entry in os.scandir(site):
    total = 0
    for dirpath, _, files in os.walk(entry.path) if entry.is_dir() else [("", [], [entry.path])]:
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass
    sizes[entry.name] = total
print(json.dumps({"python": platform.python_version(), "machine": platform.machine(),
                  "wheels": wheels, "sizes": sizes,
                  "torch": importlib.util.find_spec("torch") is not None}))
'''


def probe(root: ArmRoot, report: Report) -> None:
    """Wheels that resolved (version and platform tag), install size, torch presence."""
    (root.path / "root" / "probe.py").write_text(PROBE)
    out = root.run(f"{VENV}/bin/python probe.py", cwd=DEVICE_HOME).stdout.decode()
    info = json.loads(out.strip().splitlines()[-1])
    report.python, report.machine = info["python"], info["machine"]
    report.torch_installed = info["torch"]
    report.wheels = {k: v for k, v in sorted(info["wheels"].items()) if k in WHEELS_OF_INTEREST}
    du = root.run(f"du -sb {VENV}", cwd=DEVICE_HOME).stdout.decode().split()[0]
    report.venv_bytes = int(du)
    report.site_packages = dict(sorted(info["sizes"].items(), key=lambda kv: -kv[1])[:8])


def agent_argv(python_or_script: list[str], url: str, device: str, wav: str, backend: str,
               work: str) -> list[str]:
    return [*python_or_script, "--broker", url, "--device-id", device, "--input", wav,
            "--backend", backend, "--queue", f"{work}/q-{device}.db",
            "--stats-json", f"{work}/stats-{device}.json",
            "--packet-log", f"{work}/packets-{device}.bin", *AGENT_FLAGS]


# --- the host side ----------------------------------------------------------------------
# Decodes packets to tokens with the gacflow of the snapshot (the wheel that went to the
# device): prints {"tokens": [...], "seqs": [...], "eos": bool} per job.
DECODE = r'''
import json, sqlite3, sys
import numpy as np
from gacflow.bitstream import decode_packet, read_packet
from gacflow.bundle import Bundle
entropy = Bundle.load(None, verify=False).entropy
out = []
for job in json.loads(sys.argv[1]):
    if job["kind"] == "log":
        data, pos, packets = open(job["path"], "rb").read(), 0, []
        while pos < len(data):
            p, pos = read_packet(data, pos, entropy)
            packets.append(p)
    else:
        with sqlite3.connect(job["path"]) as db:
            rows = db.execute("SELECT payload FROM packets WHERE device=? AND session=? "
                              "ORDER BY id", (job["device"], job["session"])).fetchall()
        packets = [decode_packet(r[0], entropy) for r in rows]
    by_seq = {p.seq: p for p in packets}
    tokens = [int(t) for s in sorted(by_seq) for t in np.asarray(by_seq[s].tokens)]
    out.append({"tokens": tokens, "seqs": sorted(by_seq), "eos": any(p.eos for p in packets)})
print(json.dumps(out))
'''


@dataclass
class Snapshot:
    """The wheel's contents unpacked on this host: the x86 agent, the receiver and the
    token decoding all run from it, so one check compares one version of the code even
    while the working tree changes under it (this checkout is shared)."""

    path: Path

    @classmethod
    def of(cls, wheel: Path, dest: Path) -> Snapshot:
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        subprocess.run([sys.executable, "-m", "zipfile", "-e", str(wheel), str(dest)],
                       check=True)
        return cls(dest)

    def env(self) -> dict[str, str]:
        return dict(os.environ, PYTHONPATH=str(self.path), OMP_NUM_THREADS="1",
                    OMP_WAIT_POLICY="PASSIVE")

    def python(self, module: str) -> list[str]:
        return [sys.executable, "-m", module]

    def decode(self, jobs: list[dict]) -> list[dict]:
        done = subprocess.run([sys.executable, "-c", DECODE, json.dumps(jobs)], check=True,
                              capture_output=True, text=True, env=self.env(), timeout=300)
        return json.loads(done.stdout.strip().splitlines()[-1])

    def log_tokens(self, path: Path) -> dict:
        return self.decode([{"kind": "log", "path": str(path)}])[0]


class Receiver:
    """`gacflow-cloud` on this host (a subprocess: the real CLI, torch decoder)."""

    def __init__(self, url: str, out: Path, snap: Snapshot) -> None:
        self.out, self.snap = out, snap
        self.archive = out / "archive.sqlite"
        out.mkdir(parents=True, exist_ok=True)
        self.log = open(out / "receiver.log", "ab")  # noqa: SIM115 - closed in stop()
        argv = [*snap.python("gacflow.cloud.cli"), "--broker", url, "--out", str(out),
                "--idle-timeout", "5", "--reorder-timeout", "1", "--threads", "1",
                "--device", "cpu", "--client-id", "arm64-check-rx"]
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT,
                                     env=snap.env())

    def wait_subscribed(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"receiver exited ({self.proc.returncode}); see "
                                   f"{self.out / 'receiver.log'}")
            if b"connected to" in (self.out / "receiver.log").read_bytes():
                return
            time.sleep(0.5)
        raise RuntimeError("receiver did not subscribe in time")

    def session(self, device: str, timeout: float) -> tuple | None:
        """(name, frames, gaps, lost_frames, wav) once the device's session has ended."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.archive.exists():
                try:
                    with sqlite3.connect(self.archive, timeout=5) as db:
                        row = db.execute("SELECT name, frames, gaps, lost_frames, wav FROM "
                                         "sessions WHERE device=? AND ended IS NOT NULL",
                                         (device,)).fetchone()
                    if row:
                        return row
                except sqlite3.Error:
                    pass
            time.sleep(0.5)
        return None

    def tokens(self, device: str, session: str) -> dict:
        """What the receiver archived for this session, decoded (see DECODE)."""
        return self.snap.decode([{"kind": "archive", "path": str(self.archive),
                                  "device": device, "session": session}])[0]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def x86_reference(backend: str, broker: Mosquitto, wav: Path, work: Path,
                  snap: Snapshot) -> tuple[np.ndarray, float]:
    """The same agent from this checkout on this x86_64 host, same flags, its own broker
    (the receiver stays on the arm64 streams): (its tokens, its encoder RTF)."""
    device = f"x86-{backend}"
    argv = agent_argv(snap.python("gacflow.edge.cli"), broker.url, device, str(wav), backend,
                      str(work))
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, timeout=600, env=snap.env())
    ref = np.asarray(snap.log_tokens(work / f"packets-{device}.bin")["tokens"], np.int64)
    return ref, json.loads((work / f"stats-{device}.json").read_text())["encoder_rtf"]


def run_backend(root: ArmRoot, cpu: str, backend: str, broker: Mosquitto, rx: Receiver,
                ref: tuple[np.ndarray, float], log: Path, snap: Snapshot) -> BackendResult:
    """The agent on arm64 (this CPU model, this backend); delivery and token agreement."""
    device = f"arm64-{cpu}-{backend}"
    inside = root.path / DEVICE_HOME.lstrip("/")
    for stale in inside.glob(f"*-{device}.*"):
        stale.unlink()
    argv = agent_argv([f"{VENV}/bin/gacflow-edge"], broker.url, device,
                      f"{DEVICE_HOME}/speech.wav", backend, DEVICE_HOME)
    script = " ".join(argv) + f" 2> importtime-{device}.txt"
    t0 = time.monotonic()
    done = root.run(script, cwd=DEVICE_HOME, env={"PYTHONPROFILEIMPORTTIME": "1"}, log=log,
                    check=False, timeout=1800)
    res = BackendResult(backend, done.returncode, round(time.monotonic() - t0, 1), cpu=cpu)
    res.x86_frames, res.x86_encoder_rtf = len(ref[0]), ref[1]
    imports = (inside / f"importtime-{device}.txt").read_text(errors="replace")
    res.torch_in_importtime = bool(re.search(r"\|\s+torch(\.|\s*$)", imports, re.M))
    if done.returncode != 0:
        last = imports.strip().splitlines()[-1][:300] if imports.strip() else ""
        res.error = f"agent exit {done.returncode}: {last}"
    stats_path = inside / f"stats-{device}.json"
    if stats_path.exists():
        stats = json.loads(stats_path.read_text())
        res.frames, res.packets_made = stats["frames"], stats["packets"]
        res.packets_acked, res.qemu_encoder_rtf = stats["acked"], stats["encoder_rtf"]
    made = snap.log_tokens(inside / f"packets-{device}.bin") \
        if (inside / f"packets-{device}.bin").exists() else {"tokens": [], "seqs": []}
    row = rx.session(device, timeout=120) if made["seqs"] else None
    if row is None:
        res.error = res.error or "the receiver did not finish the session"
        return res
    name, res.session_frames, res.gaps, res.lost_frames, wav_out = row
    got = rx.tokens(device, name)
    res.packets_received = len(got["seqs"])
    res.seq_complete = got["seqs"] == made["seqs"] == list(range(len(made["seqs"])))
    res.eos_received = got["eos"]
    if wav_out and Path(wav_out).exists():
        import soundfile as sf

        res.wav_seconds = round(sf.info(wav_out).duration, 2)
    arm, x86 = np.asarray(got["tokens"], np.int64), ref[0]
    if got["tokens"] != made["tokens"]:
        res.error = res.error or "the receiver's tokens differ from the agent's packet log"
    n = min(len(arm), len(x86))
    res.tokens_compared = max(len(arm), len(x86))
    res.tokens_equal = int(np.sum(arm[:n] == x86[:n]))
    return res


ASOUNDRC = """\
pcm.gacflow_test_mic {
    type file
    slave.pcm "null"
    file "/dev/null"
    infile "/root/speech.raw"
    format "raw"
}
"""


@dataclass
class MicResult:
    """`--input mic` on arm64: PortAudio (the PyAudio the guide's mic block built) reading
    an ALSA `file` plugin PCM that plays the speech (no sound card under qemu)."""

    listed: bool = False
    exit_code: int = -1
    frames: int = 0
    packets_made: int = 0
    packets_acked: int = 0
    packets_received: int = 0
    tokens_compared: int = 0
    tokens_equal: int = 0
    error: str = ""

    @property
    def ok(self) -> bool:
        return (self.listed and self.exit_code == 0 and self.packets_made > 0
                and self.packets_made == self.packets_acked == self.packets_received
                and self.tokens_compared > 0 and self.tokens_equal == self.tokens_compared
                and not self.error)


def run_mic(root: ArmRoot, broker: Mosquitto, rx: Receiver, work: Path, log: Path,
            snap: Snapshot) -> MicResult:
    """List the ALSA device, capture from it until the speech is through, SIGTERM; the
    tokens of the speech's frames must equal x86's from the file (the last few frames,
    where the file ends and the device goes on with silence, are left out: DTX's pre-roll
    looks two frames ahead)."""
    import soundfile as sf

    res = MicResult()
    home = root.path / DEVICE_HOME.lstrip("/")
    speech, _ = sf.read(work / "speech.wav", dtype="int16")  # the WAV's very samples
    speech.astype("<i2").tofile(home / "speech.raw")
    (home / ".asoundrc").write_text(ASOUNDRC)
    listing = root.run(f"{VENV}/bin/gacflow-edge --list-devices", check=False)
    out = (listing.stdout or b"").decode(errors="replace")
    res.listed = listing.returncode == 0 and "\tgacflow_test_mic\t" in out
    if not res.listed:
        res.error = "PortAudio does not list the ALSA test device"
        return res
    device = "arm64-mic"
    for stale in home.glob(f"*-{device}.*"):
        stale.unlink()
    argv = agent_argv([f"{VENV}/bin/gacflow-edge"], broker.url, device, "mic", "onnx",
                      DEVICE_HOME) + ["--input-device", "gacflow_test_mic",
                                      "--status-interval", "0.5"]
    proc = root.popen(" ".join(argv), log=log)
    stats_path, want = home / f"stats-{device}.json", len(speech) // 640 + 25
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if json.loads(stats_path.read_text())["frames"] >= want:
                break
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.5)
    proc.terminate()
    try:
        res.exit_code = proc.wait(120)
    except subprocess.TimeoutExpired:
        proc.kill()
        res.exit_code = proc.wait()
    stats = json.loads(stats_path.read_text()) if stats_path.exists() else {}
    res.frames, res.packets_made = stats.get("frames", 0), stats.get("packets", 0)
    res.packets_acked = stats.get("acked", 0)
    row = rx.session(device, timeout=120)
    if row is None:
        res.error = "the receiver did not finish the mic session"
        return res
    got = rx.tokens(device, row[0])
    res.packets_received = len(got["seqs"])
    ref = snap.log_tokens(work / "packets-x86-onnx.bin")["tokens"]
    n = len(ref) - 5
    res.tokens_compared = n
    res.tokens_equal = int(np.sum(np.asarray(got["tokens"][:n]) == np.asarray(ref[:n])))
    return res


ARMV7_PLATFORMS = ("linux_armv7l", "manylinux2014_armv7l", "manylinux_2_17_armv7l",
                   "manylinux_2_31_armv7l", "manylinux_2_35_armv7l")
ARMV7_PACKAGES = ("onnxruntime", "ai-edge-litert", "tflite-runtime", "numpy", "soxr",
                  "soundfile", "paho-mqtt")


def armv7_wheels(dest: Path) -> dict[str, str]:
    """What PyPI offers 32-bit Pi OS Bookworm (armv7l, CPython 3.11): the wheel pip would
    take per package, or 'none'. Asks pip itself (download --only-binary, no install)."""
    out = {}
    for pkg in ARMV7_PACKAGES:
        argv = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311",
                "--abi", "abi3", "--abi", "none", "-d", str(dest), "--isolated", "-q", pkg]
        for plat in ARMV7_PLATFORMS:
            argv[4:4] = ["--platform", plat]
        before = set(dest.glob("*.whl")) if dest.exists() else set()
        done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
        new = sorted(set(dest.glob("*.whl")) - before) if dest.exists() else []
        out[pkg] = new[0].name if done.returncode == 0 and new else "none"
    return out


def write_wav_excerpt(src: Path, seconds: float | None, dest: Path) -> float:
    """The first `seconds` of the 16 kHz mono sample, as 16-bit PCM (no resampling)."""
    import soundfile as sf

    audio, rate = sf.read(src, dtype="int16")
    if rate != 16000 or audio.ndim != 1:
        raise SystemExit(f"{src}: expected 16 kHz mono, got {rate} Hz, shape {audio.shape}")
    if seconds:
        audio = audio[: int(seconds * rate)]
    sf.write(dest, audio, rate, subtype="PCM_16")
    return len(audio) / rate


# --- report -------------------------------------------------------------------------------
def markdown(r: Report, command: str) -> str:
    mb = 1024 * 1024
    lines = [
        "# The edge agent on arm64 (edge/arm64/check.sh)",
        "",
        f"Command: `{command}`. Result: **{'pass' if r.ok else 'FAIL'}**.",
        "",
        f"Debian bookworm arm64 root (debootstrap, minbase + python3 + sudo, like a flashed "
        f"Raspberry Pi OS Lite 64-bit) run through qemu-user ({r.method}) on an x86_64 host; "
        f"Python {r.python}, `platform.machine()` = {r.machine}. "
        + ("The device root was reused from the previous full check (only gacflow refreshed)."
           if r.reused_device else
           f"Installed from scratch by the {len(r.install_commands)} commands of docs/edge.md's "
           "install blocks (install, microphone) in a fresh copy of the base root "
           f"({r.install_seconds / 60:.1f} min under emulation, downloads cached)."),
        "",
        "Wheels pip resolved on aarch64 (version, platform tag):",
        "",
        "| package | wheel |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in r.wheels.items()],
        "",
        f"Install size: {r.venv_bytes / mb:.0f} MB for the whole venv ({VENV}); largest in "
        "site-packages: " + ", ".join(f"{k} {v / mb:.0f} MB" for k, v in
                                      list(r.site_packages.items())[:6]) + ". "
        f"torch installed: {'yes' if r.torch_installed else 'no'}.",
        "",
        f"Agent runs ({r.seconds_audio:.1f} s of `sdk/samples/speech_ru.wav`, "
        f"`{' '.join(AGENT_FLAGS)}`, against mosquitto on the host's loopback; the host's "
        "`gacflow-cloud` decodes the stream):",
        "",
        "| CPU (qemu) | backend | exit | packets made / acked / received | seq complete, eos "
        "| gaps | decoded WAV | tokens equal to x86 | torch imported | qemu wall | qemu encoder "
        "RTF "
        "(not Pi speed) | x86 encoder RTF |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for b in r.backends:
        lines.append(
            f"| {CPUS[b.cpu].board} ({CPUS[b.cpu].qemu}) | {b.backend} | {b.exit_code} | "
            f"{b.packets_made} / {b.packets_acked} / "
            f"{b.packets_received} | {'yes' if b.seq_complete and b.eos_received else 'no'} | "
            f"{b.gaps} ({b.lost_frames} frames) | {b.wav_seconds:.2f} s | "
            f"{b.tokens_equal}/{b.tokens_compared} ({100 * b.agreement:.2f} %) | "
            f"{'yes' if b.torch_in_importtime else 'no'} | {b.seconds_wall:.0f} s | "
            f"{b.qemu_encoder_rtf:.3f} | {b.x86_encoder_rtf:.4f} |"
            + (f" {b.error}" if b.error else ""))
    if r.mic is not None:
        m = r.mic
        lines += ["", f"Microphone path on arm64 (`--input mic`, PyAudio built by the guide's "
                  "mic block, PortAudio reading an ALSA `file` plugin PCM that plays the same "
                  f"speech): device listed {'yes' if m.listed else 'no'}; exit {m.exit_code} "
                  f"after SIGTERM; packets made / acked / received {m.packets_made} / "
                  f"{m.packets_acked} / {m.packets_received}; tokens of the speech frames "
                  f"equal to x86's from the file: {m.tokens_equal}/{m.tokens_compared}"
                  + (f"; {m.error}" if m.error else "") + "."]
    if r.armv7:
        lines += ["", "32-bit Raspberry Pi OS (armv7l, CPython 3.11): the wheels PyPI offers "
                  "(`pip download --only-binary=:all: --platform linux_armv7l ...`): "
                  + ", ".join(f"{k}: {v}" for k, v in r.armv7.items()) + "."]
    lines += ["", "Tokens are compared frame by frame (SILENT marks included) after decoding "
              "the packets the receiver archived; packet bytes are not compared."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=0.0,
                    help="use the first S seconds of the sample (0: all 18.1 s)")
    ap.add_argument("--reuse-device", action="store_true",
                    help="reuse the installed device root (only refresh gacflow); for CI")
    ap.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    ap.add_argument("--cpus", nargs="+", choices=sorted(CPUS), default=sorted(CPUS),
                    help="boards whose CPU qemu emulates (pi4: Cortex-A72, pi5: Cortex-A76)")
    ap.add_argument("--no-mic", action="store_true",
                    help="skip the guide's microphone block (PyAudio build) and the mic run")
    ap.add_argument("--report", type=Path, default=REPO / "bench" / "results" / "arm64.md")
    ap.add_argument("--no-report", action="store_true", help="do not write --report")
    ap.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = ap.parse_args(argv)
    try:
        method = pick_method()
    except EmulationUnavailable as exc:
        print(f"arm64 check: {exc}", file=sys.stderr)
        return 2
    cache = rootfs.cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    lock = open(cache / "lock", "w")  # noqa: SIM115 - held until the process exits
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        say(f"another arm64 check holds {cache / 'lock'}; waiting for it")
        fcntl.flock(lock, fcntl.LOCK_EX)
    log = cache / "check.log"
    say(f"emulation: {method}; cache {cache}; log {log}")
    if not rootfs.base_ready(cache):
        say("building the base root (debootstrap + qemu, ~5 min here, once)")
        rootfs.build_base(cache, method, cache / "base.log")
    reuse = args.reuse_device
    if reuse and not (cache / "device" / INSTALLED_STAMP).exists():
        print(f"arm64 check: no installed device root in {cache}/device (run the full check "
              "first: edge/arm64/check.sh)", file=sys.stderr)
        return 2
    if not reuse:
        say("fresh device root: a copy of base/")
        rootfs.fresh_device(cache)
    root = ArmRoot(cache / "device", method, rootfs.binds(cache), cpuinfo=cache / "cpuinfo")
    root.set_cpu(CPUS["pi4"])
    with tempfile.TemporaryDirectory(prefix="gacflow-arm64-") as tmp:
        work = Path(tmp)
        wheel = build_wheel(cache / "wheel")
        snap = Snapshot.of(wheel, cache / "x86-snapshot")
        say(f"wheel {wheel.name}; this host runs the same code from {snap.path}")
        report = Report(method=method, seconds_audio=0.0, reused_device=reuse)
        report.seconds_audio = write_wav_excerpt(SAMPLE, args.seconds or None, work / "speech.wav")
        shutil.copy(work / "speech.wav", root.path / "root" / "speech.wav")
        broker, x86_broker = Mosquitto().start(), Mosquitto().start()
        rx = Receiver(broker.url, work / "rx", snap)
        try:
            with root.session():
                report.install_commands, report.install_seconds = install(root, wheel, log, reuse,
                                                                       not args.no_mic)
                probe(root, report)
                say(f"wheels: {report.wheels}")
                rx.wait_subscribed()
                refs = {b: x86_reference(b, x86_broker, work / "speech.wav", work, snap)
                        for b in args.backends}
                for cpu in args.cpus:
                    root.set_cpu(CPUS[cpu])
                    for b in args.backends:
                        say(f"agent on arm64, {CPUS[cpu].board} CPU ({CPUS[cpu].qemu}), "
                            f"backend {b}, {report.seconds_audio:.1f} s of audio")
                        res = run_backend(root, cpu, b, broker, rx, refs[b], log, snap)
                        say(f"{cpu} {b}: delivered={res.delivered} tokens {res.tokens_equal}/"
                            f"{res.tokens_compared} torch={res.torch_in_importtime} "
                            f"{res.qemu_encoder_rtf=} {res.error}")
                        report.backends.append(res)
                root.set_cpu(CPUS["pi4"])
                stamp = (root.path / INSTALLED_STAMP).read_text()
                if not args.no_mic and "onnx" in args.backends and "[mic]" in stamp:
                    say("agent on arm64, --input mic (PortAudio on an ALSA file-plugin PCM)")
                    report.mic = run_mic(root, broker, rx, work, log, snap)
                    m = report.mic
                    say(f"mic: listed={m.listed} exit={m.exit_code} packets {m.packets_made}/"
                        f"{m.packets_received} tokens {m.tokens_equal}/{m.tokens_compared} "
                        f"{m.error}")
        finally:
            rx.stop()
            broker.close()
            x86_broker.close()
    if not reuse:
        say("asking PyPI what 32-bit Pi OS (armv7l, CPython 3.11) would get")
        with tempfile.TemporaryDirectory(prefix="gacflow-armv7-") as tmp:
            report.armv7 = armv7_wheels(Path(tmp))
    result = report.to_json()
    text = json.dumps(result, indent=1)
    if args.json:
        args.json.write_text(text + "\n")
    if not args.no_report:
        cmd = "edge/arm64/check.sh" + (f" --seconds {args.seconds:g}" if args.seconds else "")
        args.report.write_text(markdown(report, cmd))
        say(f"report: {args.report}")
    print(text)
    say("PASS" if report.ok else "FAIL")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
