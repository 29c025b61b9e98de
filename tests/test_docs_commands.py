"""Every command in the user-facing docs runs as written, parses, or says why it cannot here.

Commands are the lines of the ```bash / ```sh / ```console blocks of DOCS (comment lines
and trailing comments dropped, `\\` continuations joined; in console blocks only `$ `
lines). Each is one of:
- run: cheap, self-contained `gacflow` / `gacflow-*` commands (encode, decode, info, --help,
  a re-export of the shipped bundle), in doc order in a temporary folder that holds a
  `speech.wav` and links to the repository's `sdk/` and `examples/`, the running venv's bin
  folder first on PATH (wherever GACFLOW_VENV put it);
- checked: the other console-script and script commands go through their own argparse
  parser (parse_args is stopped right after parsing), so a flag that does not exist fails;
  `./run X` must name a subcommand of the run script;
- marked: a trailing `# doc-check: skip (reason)`, for what needs root, a device, a broker,
  a GPU or hours. Their console-script parts are option-checked too.
`<angle-bracket>` words are placeholders: such commands are checked, never run.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import io
import os
import re
import runpy
import shlex
import shutil
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
DOCS = ["README.md", "docs/edge.md", "docs/export.md", "examples/edge/INSTALL-raspberry-pi.md"]
SHELL_FENCES = {"bash", "sh", "shell", "console"}
SKIP = re.compile(r"#\s*doc-check:\s*skip\s*\((?P<why>[^)]+)\)")
PLACEHOLDER = re.compile(r"<[A-Za-z][\w.-]*>")
SCRIPTS: dict[str, str] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
    "scripts"]
# (program, first argument) pairs cheap enough to run; anything with --help/--version runs too.
RUNNABLE = {("gacflow", "encode"), ("gacflow", "decode"), ("gacflow", "info"),
            ("gacflow-export", "sdk/bundles/default")}
SEPARATORS = {"|", "||", "&&", ";"}


@dataclass(frozen=True)
class Command:
    doc: str
    line: int
    text: str  # as written, continuations joined, trailing comment kept
    skip: str | None  # the reason of a `# doc-check: skip (...)` marker

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}"

    def segments(self) -> list[list[str]]:
        """argv of each pipeline / && / ; part, placeholders replaced, comments dropped."""
        text = PLACEHOLDER.sub("PLACEHOLDER", self.text)
        lex = shlex.shlex(text, posix=True, punctuation_chars="|&;")
        lex.whitespace_split = True
        lex.commenters = "#"
        out: list[list[str]] = [[]]
        for tok in lex:
            if tok in SEPARATORS:
                out.append([])
            else:
                out[-1].append(tok)
        env = re.compile(r"^[A-Z_][A-Z0-9_]*=")  # leading VAR=value assignments
        out = [argv[next((i for i, a in enumerate(argv) if not env.match(a)), len(argv)):]
               for argv in out]
        return [argv for argv in out if argv]


def extract(doc: str) -> list[Command]:
    """The shell commands of one Markdown file."""
    cmds: list[Command] = []
    fence: str | None = None
    pending: list[str] = []
    start = 0
    for no, raw in enumerate((ROOT / doc).read_text().splitlines(), 1):
        line = raw.strip()
        if line.startswith("```"):
            fence = None if fence is not None else (line[3:].strip().lower() or "text")
            continue
        if fence not in SHELL_FENCES:
            continue
        if fence == "console" and not pending:
            if not line.startswith("$ "):
                continue
            line = line[2:]
        if not pending and (not line or line.startswith("#")):
            continue
        if not pending:
            start = no
        if line.endswith("\\"):
            pending.append(line[:-1].strip())
            continue
        text = " ".join([*pending, line])
        pending = []
        m = SKIP.search(text)
        cmds.append(Command(doc, start, text, m.group("why") if m else None))
    return cmds


COMMANDS = [c for doc in DOCS for c in extract(doc)]


def program(argv: list[str]) -> str:
    return Path(argv[0]).name


def runnable(cmd: Command) -> bool:
    if cmd.skip or PLACEHOLDER.search(cmd.text):
        return False
    segs = cmd.segments()
    if len(segs) != 1 or program(segs[0]) not in SCRIPTS:
        return False
    argv = segs[0]
    if "--help" in argv or "--version" in argv:
        return True
    return len(argv) > 1 and (program(argv), argv[1]) in RUNNABLE


def checkable(argv: list[str]) -> bool:
    name = program(argv)
    if name in SCRIPTS or name == "run":
        return True
    return name.startswith("python") and len(argv) > 1 and (
        argv[1].endswith(".py") or (argv[1] == "-m" and len(argv) > 2
                                    and argv[2].startswith("gacflow")))


def classify(cmd: Command) -> str:
    if runnable(cmd):
        return "run"
    if cmd.skip:
        return "marked"
    if all(checkable(argv) for argv in cmd.segments()):
        return "checked"
    return "unmarked"


class _Parsed(Exception):
    """Raised right after a successful parse_args: the command line is valid."""


def parse_only(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    """Run a CLI up to (and including) its argparse parse; (exit code, stderr)."""
    original = argparse.ArgumentParser.parse_args

    def stop(self, args=None, namespace=None):
        original(self, args, namespace)
        raise _Parsed

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", stop)
    err = io.StringIO()
    name, rest = program(argv), argv[1:]
    try:
        with redirect_stdout(io.StringIO()), redirect_stderr(err):
            if name in SCRIPTS:
                module, func = SCRIPTS[name].split(":")
                monkeypatch.setattr(sys, "argv", [name, *rest])
                entry = getattr(importlib.import_module(module), func)
                entry(rest) if inspect.signature(entry).parameters else entry()
            elif rest[0] == "-m":
                monkeypatch.setattr(sys, "argv", [rest[1], *rest[2:]])
                runpy.run_module(rest[1], run_name="__main__")
            else:
                monkeypatch.setattr(sys, "argv", rest)
                runpy.run_path(str(ROOT / rest[0]), run_name="__main__")
    except _Parsed:
        return 0, ""
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
        return code, err.getvalue() + ("" if isinstance(exc.code, int) else str(exc.code))
    return 1, "the command ran past its argument parser without parse_args"


def check_run_script(argv: list[str]) -> None:
    subcommands = re.findall(r"^\s*(\w+)\)", (ROOT / "run").read_text(), re.M)
    assert len(argv) > 1 and argv[1] in subcommands, f"./run has no subcommand {argv[1:]}"


def test_every_command_is_run_checked_or_marked(capsys):
    kinds = {c.id: classify(c) for c in COMMANDS}
    with capsys.disabled():
        print(f"\ndoc commands: {len(COMMANDS)}; " + ", ".join(
            f"{k} {list(kinds.values()).count(k)}" for k in ("run", "checked", "marked")))
        for c in COMMANDS:
            if c.skip:
                print(f"  skipped {c.id}: {c.skip}")
    assert len(COMMANDS) > 20, "the extractor found too few commands"
    bad = [f"{c.id}: {c.text}" for c in COMMANDS if kinds[c.id] == "unmarked"]
    assert not bad, "neither run, checked nor marked `# doc-check: skip (why)`:\n" + "\n".join(bad)


@pytest.mark.parametrize("cmd", [c for c in COMMANDS if classify(c) != "run"], ids=lambda c: c.id)
def test_command_parses(cmd, monkeypatch):
    """Console-script parts of checked and marked commands use only options that exist."""
    for argv in cmd.segments():
        if program(argv) == "sudo":
            argv = argv[1:]
        if not argv or not checkable(argv):
            continue
        if program(argv) == "run":
            check_run_script(argv)
            continue
        code, err = parse_only(argv, monkeypatch)
        assert code == 0, f"{cmd.id}: {shlex.join(argv)} does not parse: {err.strip()}"


def test_cheap_commands_run(tmp_path, speech):
    """The runnable commands, in doc order, as written (one folder, so decode finds encode's)."""
    from gacflow.audio import write_wav

    write_wav(tmp_path / "speech.wav", speech[: 16000 * 4])
    for name in ("sdk", "examples"):
        (tmp_path / name).symlink_to(ROOT / name)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    ran = [c for c in COMMANDS if classify(c) == "run"]
    assert ran, "no runnable command found"
    bash = shutil.which("bash") or "/bin/bash"
    for c in ran:
        done = subprocess.run([bash, "-c", c.text], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, f"{c.id}: {c.text}\n{done.stderr[-2000:]}"


def test_wheel_name_in_docs_is_the_built_one():
    """The install docs name the wheel `pip wheel` builds for this version."""
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    wheel = f"gacflow-{version}-py3-none-any.whl"
    for doc in ("docs/edge.md", "examples/edge/INSTALL-raspberry-pi.md"):
        text = (ROOT / doc).read_text()
        named = set(re.findall(r"gacflow-[\w.]+-py3-none-any\.whl", text))
        assert named == {wheel}, f"{doc} names {named or 'no wheel'}, pip builds {wheel}"
        assert "pip install 'gacflow[" not in text, f"{doc}: gacflow is not on PyPI"


def test_wheel_command_builds_that_wheel(tmp_path):
    """The build-machine command of docs/edge.md, into a temporary folder (~15 s)."""
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "-w",
                           str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert [p.name for p in tmp_path.glob("*.whl")] == [f"gacflow-{version}-py3-none-any.whl"]
