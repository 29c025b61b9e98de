"""gacflow.settings: the layered settings shared by the edge agent and the cloud receiver."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import pytest

from gacflow.errors import ConfigError
from gacflow.settings import Settings

PREFIX = "GACFLOW_TEST_"


@dataclass
class Demo:
    name: str = "plain"
    count: int = 3
    ratio: float = 0.5
    enabled: bool = False
    port: int | None = None
    label: str | None = None
    level: str = "info"


SETTINGS = Settings(Demo, PREFIX, ("demo", "gacflow-demo"),
                    help={"count": "how many", "level": "log level"},
                    choices={"level": ("debug", "info")}, show_defaults=True)


def parse(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(exit_on_error=False)
    SETTINGS.add_arguments(ap)
    return ap.parse_args(argv)


def error(fn, *args) -> str:
    with pytest.raises(ConfigError) as err:
        fn(*args)
    text = str(err.value)
    assert "\n" not in text
    return text


def test_defaults_without_sources():
    assert SETTINGS.merge(parse([]), env={}) == Demo()


def test_precedence_default_toml_env_flag(tmp_path):
    f = tmp_path / "s.toml"
    f.write_text('name = "file"\ncount = 7\nratio = 2\nenabled = true\n')
    env = {PREFIX + "COUNT": "8", PREFIX + "ENABLED": "off"}
    cfg = SETTINGS.merge(parse(["--count", "9"]), env=env, config_path=str(f))
    assert cfg.count == 9  # flag > env > file
    assert cfg.enabled is False  # env > file
    assert cfg.name == "file" and cfg.ratio == 2.0  # file > default
    assert cfg.level == "info"  # default
    assert SETTINGS.merge(parse(["--enabled"]), env=env, config_path=str(f)).enabled is True
    # PREFIX_CONFIG names the file when no path is given; an explicit path wins over it
    assert SETTINGS.merge(None, env={PREFIX + "CONFIG": str(f)}).name == "file"
    other = tmp_path / "o.toml"
    other.write_text('name = "other"\n')
    assert SETTINGS.merge(None, env={PREFIX + "CONFIG": str(f)},
                          config_path=str(other)).name == "other"


def test_tables_and_dashes(tmp_path):
    f = tmp_path / "s.toml"
    f.write_text('[gacflow-demo]\nname = "t"\n[other-service]\nanything = 1\n')
    assert SETTINGS.read_toml(f) == {"name": "t"}  # other tables are not ours
    f.write_text('[demo]\nlabel = "a"\n[gacflow-demo]\nname = "second"\n')
    assert SETTINGS.read_toml(f) == {"label": "a"}  # the first named table wins
    f.write_text("ratio = 1.5\n")
    assert SETTINGS.read_toml(f) == {"ratio": 1.5}
    f.write_text("demo = 3\n")
    assert "[demo] must be a table" in error(SETTINGS.read_toml, f)


@pytest.mark.parametrize("raw, expected", [
    ("true", True), ("1", True), ("YES", True), (" on ", True),
    ("false", False), ("0", False), ("no", False), ("Off", False),
])
def test_bool_spellings(raw, expected):
    assert SETTINGS.read_env({PREFIX + "ENABLED": raw}) == {"enabled": expected}


def test_conversions():
    assert SETTINGS.convert("count", "12", "x") == 12
    assert SETTINGS.convert("count", 4.0, "x") == 4
    assert SETTINGS.convert("ratio", "1e-3", "x") == 1e-3
    assert SETTINGS.convert("ratio", 2, "x") == 2.0
    assert SETTINGS.convert("name", 275, "x") == "275"  # TOML `mode = 275`
    assert SETTINGS.convert("port", "", "x") is None  # optional: empty means unset
    assert SETTINGS.convert("port", None, "x") is None
    assert SETTINGS.convert("port", "9108", "x") == 9108
    assert SETTINGS.convert("label", "", "x") is None
    assert SETTINGS.convert("name", "", "x") == ""  # a plain str keeps the empty string


@pytest.mark.parametrize("name, raw, needle", [
    ("count", 1.5, "expected an integer, got 1.5"),
    ("count", "1.5", "expected an integer"),
    ("count", True, "expected an integer, got True"),
    ("count", "", "expected an integer"),
    ("ratio", True, "expected a number"),
    ("ratio", "fast", "expected a number"),
    ("enabled", "maybe", "expected true/false"),
    ("name", 1.5, "expected a string"),
    ("name", [1], "expected a string"),
    ("port", "x", "expected an integer"),
    ("level", "loud", "level must be one of debug, info, got 'loud'"),
])
def test_bad_values_name_source_and_setting(name, raw, needle):
    text = error(SETTINGS.convert, name, raw, "environment GACFLOW_TEST_X")
    assert text.startswith("environment GACFLOW_TEST_X: ") and needle in text
    if name != "level":
        assert f"bad value for {name}" in text


def test_each_source_is_named(tmp_path):
    f = tmp_path / "s.toml"
    f.write_text("count = 1.5\n")
    assert error(SETTINGS.merge, None, {}, str(f)).startswith(f"config {f}: bad value for count")
    assert error(SETTINGS.merge, None, {PREFIX + "COUNT": "x"}).startswith(
        "environment GACFLOW_TEST_COUNT: bad value for count")
    assert error(SETTINGS.merge, parse(["--count", "x"]), {}).startswith(
        "--count: bad value for count")
    assert error(SETTINGS.merge, parse(["--level", "loud"]), {}).startswith(
        "--level: level must be one of")


def test_unknown_keys_and_variables(tmp_path):
    f = tmp_path / "s.toml"
    f.write_text("colour = 1\n")
    assert error(SETTINGS.read_toml, f) == f"config {f}: unknown setting 'colour'"
    assert error(SETTINGS.read_env, {PREFIX + "COUNTT": "1"}) == \
        "environment: unknown variable GACFLOW_TEST_COUNTT"
    assert SETTINGS.read_env({"GACFLOW_OTHER_X": "1", PREFIX + "CONFIG": "x.toml"}) == {}


def test_bad_files(tmp_path):
    assert "not found" in error(SETTINGS.read_toml, tmp_path / "missing.toml")
    f = tmp_path / "s.toml"
    f.write_text("count = [\n")
    assert "not valid TOML" in error(SETTINGS.read_toml, f)
    f.write_bytes(b"\xff\xfe = 1\n")
    assert "not valid TOML" in error(SETTINGS.read_toml, f)
    assert "cannot read" in error(SETTINGS.read_toml, tmp_path)  # a folder


def test_flags_help_and_choices():
    ap = argparse.ArgumentParser()
    SETTINGS.add_arguments(ap)
    text = ap.format_help()
    assert "--no-enabled" in text and "--no-count" not in text
    assert "{debug,info}" in text and "how many (default 3)" in text
    assert "(default None)" not in text
    assert SETTINGS.check_choices(Demo()) == Demo()
    assert "level must be one of" in error(SETTINGS.check_choices, Demo(level="x"))


def test_unsupported_field_type_is_refused():
    @dataclass
    class Bad:
        values: list[int] | None = None

    with pytest.raises(TypeError):
        Settings(Bad, "X_")


def test_edge_and_cloud_use_it(tmp_path):
    from gacflow.cloud import config as cloud_config
    from gacflow.cloud.cli import build_parser
    from gacflow.edge import config as edge_config

    f = tmp_path / "both.toml"  # one file can serve both services
    f.write_text('[gacflow-edge]\nbatch_seconds = 2\n'
                 '[gacflow-cloud]\nidle_timeout = 3\nmetrics_port = 9200\n')
    edge = edge_config.build(None, env={"GACFLOW_EDGE_CONFIG": str(f)})
    assert edge.batch_seconds == 2.0
    cloud = cloud_config.resolve(build_parser().parse_args([]),
                                 env={"GACFLOW_CLOUD_CONFIG": str(f),
                                      "GACFLOW_CLOUD_ARCHIVE": ""})
    assert cloud.idle_timeout == 3.0 and cloud.metrics_port == 9200 and cloud.archive is None
    assert "unknown variable GACFLOW_CLOUD_IDLETIMEOUT" in error(
        cloud_config.resolve, build_parser().parse_args([]), {"GACFLOW_CLOUD_IDLETIMEOUT": "1"})
