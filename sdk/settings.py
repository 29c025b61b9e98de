"""Layered service settings: defaults < TOML file < environment variables < flags.

The edge agent and the cloud receiver describe their settings as a dataclass; a
`Settings` object turns it into argparse flags, reads a TOML file and PREFIX_* variables,
converts every value strictly and merges the sources. A setting has one name everywhere:
the field `batch_seconds` is `batch_seconds` (or `batch-seconds`) in TOML,
`GACFLOW_EDGE_BATCH_SECONDS` in the environment and `--batch-seconds` on the command line.
Any bad value raises `ConfigError` with one line naming its source. Standard library only.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Generic, TypeVar

from .errors import ConfigError

T = TypeVar("T")
TRUE = frozenset({"1", "true", "yes", "on"})
FALSE = frozenset({"0", "false", "no", "off"})


def parse_bool(value: Any) -> bool:
    """true/false, 1/0, yes/no, on/off (any case); TOML booleans as they are."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in TRUE:
        return True
    if text in FALSE:
        return False
    raise ValueError(f"expected true/false, got {value!r}")


def parse_int(value: Any) -> int:
    """Integers, integral floats and integer strings; never a bool or 1.5."""
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ValueError(f"expected an integer, got {value!r}")
    if isinstance(value, (int, float)):
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise ValueError(f"expected an integer, got {value!r}")


def parse_float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"expected a number, got {value!r}")
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"expected a number, got {value!r}") from None


def parse_str(value: Any) -> str:
    """Strings; TOML integers too (`mode = 275`, `mqtt_version = 5`)."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise ValueError(f"expected a string, got {value!r}")


PARSERS: dict[type, Callable[[Any], Any]] = {
    bool: parse_bool, int: parse_int, float: parse_float, str: parse_str,
}


def _field_kind(hint: Any) -> tuple[type, bool]:
    """A field's annotation -> (base type, whether None is allowed)."""
    optional = False
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = len(args) < len(typing.get_args(hint))
        if len(args) != 1:
            raise TypeError(f"unsupported settings type {hint!r}")
        hint = args[0]
    if hint not in PARSERS:
        raise TypeError(f"unsupported settings type {hint!r}")
    return hint, optional


def _load_toml(text: str) -> dict[str, Any]:
    try:
        import tomllib  # Python 3.11+
    except ModuleNotFoundError:  # pragma: no cover - Python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ModuleNotFoundError as exc:
            raise ConfigError("--config needs Python 3.11+ or `pip install tomli`") from exc
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(str(exc)) from exc


class Settings(Generic[T]):
    """The settings schema of one service, built from a dataclass of its settings.

    `tables`: TOML tables that may hold the settings (the first one present is read, so
    one file can serve several services); without any, the top level is read.
    `show_defaults`: append "(default X)" to the help of settings with a default.
    """

    def __init__(self, schema: type[T], env_prefix: str, tables: tuple[str, ...] = (),
                 help: Mapping[str, str] | None = None,
                 choices: Mapping[str, tuple[str, ...]] | None = None,
                 show_defaults: bool = False) -> None:
        self.schema = schema
        self.env_prefix = env_prefix
        self.tables = tables
        self.help = dict(help or {})
        self.choices = dict(choices or {})
        self.show_defaults = show_defaults
        hints = typing.get_type_hints(schema)
        self.fields = {f.name: f for f in dataclasses.fields(schema)}  # type: ignore[arg-type]
        self.kinds = {name: _field_kind(hints[name]) for name in self.fields}

    def names(self) -> list[str]:
        return list(self.fields)

    # -- one value ------------------------------------------------------------------
    def convert(self, name: str, raw: Any, source: str) -> Any:
        """Convert and check one value; ConfigError names the source and the setting."""
        kind, optional = self.kinds[name]
        if optional and (raw is None or raw == ""):
            return None
        try:
            value = PARSERS[kind](raw)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{source}: bad value for {name}: {exc}") from None
        allowed = self.choices.get(name)
        if allowed and value not in allowed:
            raise ConfigError(f"{source}: {self._choice_error(name, value)}")
        return value

    def _choice_error(self, name: str, value: Any) -> str:
        return (f"{name.replace('_', '-')} must be one of {', '.join(self.choices[name])}, "
                f"got {value!r}")

    def check_choices(self, cfg: T) -> T:
        """For instances built by hand (merge() already checks every source)."""
        for name, allowed in self.choices.items():
            value = getattr(cfg, name)
            if value not in allowed and not (value is None and self.kinds[name][1]):
                raise ConfigError(self._choice_error(name, value))
        return cfg

    # -- sources --------------------------------------------------------------------
    def add_arguments(self, ap: argparse.ArgumentParser) -> None:
        """One flag per setting; all default to None so that unset flags do not override."""
        for name, f in self.fields.items():
            flag = "--" + name.replace("_", "-")
            text = self.help.get(name, "")
            default = f.default if f.default is not dataclasses.MISSING else None
            if self.show_defaults and default:
                text += f" (default {default})"
            if self.kinds[name][0] is bool:
                ap.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction,
                                default=None, help=text)
            else:
                allowed = self.choices.get(name)
                metavar = "{" + ",".join(allowed) + "}" if allowed else name.upper()
                ap.add_argument(flag, dest=name, default=None, metavar=metavar, help=text)

    def read_toml(self, path: str | Path) -> dict[str, Any]:
        """Settings from a TOML file: its first table named in `tables`, else the top level."""
        p = Path(path)
        where = f"config {p}"
        try:
            data = _load_toml(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{where}: not found") from None
        except OSError as exc:
            raise ConfigError(f"{where}: cannot read ({exc.strerror or exc})") from None
        except (UnicodeDecodeError, ValueError) as exc:
            raise ConfigError(f"{where}: not valid TOML ({exc})") from None
        for table in self.tables:
            if table in data:
                if not isinstance(data[table], dict):
                    raise ConfigError(f"{where}: [{table}] must be a table")
                data = data[table]
                break
        out: dict[str, Any] = {}
        for key, raw in data.items():
            name = key.replace("-", "_")
            if name not in self.fields:
                raise ConfigError(f"{where}: unknown setting {key!r}")
            out[name] = self.convert(name, raw, where)
        return out

    def read_env(self, env: Mapping[str, str]) -> dict[str, Any]:
        """Settings from PREFIX<NAME> variables; PREFIX CONFIG names the TOML file and
        any other unknown PREFIX* variable is an error (a typo must not pass unnoticed)."""
        out: dict[str, Any] = {}
        for key, raw in env.items():
            if not key.startswith(self.env_prefix):
                continue
            name = key[len(self.env_prefix):].lower()
            if name == "config":
                continue
            if name not in self.fields:
                raise ConfigError(f"environment: unknown variable {key}")
            out[name] = self.convert(name, raw, f"environment {key}")
        return out

    def read_args(self, args: argparse.Namespace | None) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in self.fields:
            raw = getattr(args, name, None) if args is not None else None
            if raw is not None:
                out[name] = self.convert(name, raw, "--" + name.replace("_", "-"))
        return out

    def merge(self, args: argparse.Namespace | None = None,
              env: Mapping[str, str] | None = None, config_path: str | None = None) -> T:
        """Defaults < TOML (config_path, else PREFIX CONFIG) < environment < flags."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        path = config_path or env.get(self.env_prefix + "CONFIG")
        if path:
            values.update(self.read_toml(path))
        values.update(self.read_env(env))
        values.update(self.read_args(args))
        return self.schema(**values)
