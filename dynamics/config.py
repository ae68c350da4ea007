"""Typed configuration schemas: parsing from the command line and TOML, validation.

Values are parsed as data (int, float, bool, str, lists of numbers); nothing is
ever evaluated. Every error is a `UsageError` naming the key.

A schema resolves to an instance of its config class (`Schema.config_class`): a
frozen dataclass with one attribute per key (its Key in the field's metadata),
also readable as a mapping (config["key"], dict(config), {**config}).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import UsageError

TYPES = ("int", "float", "bool", "str", "ints", "floats")
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


@dataclass(frozen=True)
class Key:
    """One configuration key.

    - name: the key as written on the command line and in TOML
    - type: one of "int", "float", "bool", "str", "ints", "floats" (lists)
    - default: the value when the key is not given (None: no default value)
    - doc: one line, with units
    - choices: allowed values of a "str" key
    - low / high: bounds of a number (each element of a list)
    - low_open: whether `low` itself is excluded (e.g. lr > 0)
    - nonempty: whether a list must have at least one element
    """

    name: str
    type: str
    default: Any
    doc: str
    choices: tuple = ()
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    nonempty: bool = True

    def parse(self, value: Any) -> Any:
        """Convert a command-line string or a TOML value, then validate it."""
        if self.type in ("ints", "floats"):
            items = value.split(",") if isinstance(value, str) else value
            if not isinstance(items, (list, tuple)):
                items = [items]
            elem = self.type[:-1]
            parsed = [self._scalar(elem, item) for item in items]
            if self.nonempty and not parsed:
                raise UsageError(f"key '{self.name}': the list is empty")
            for item in parsed:
                self._check_range(item)
            return parsed
        parsed = self._scalar(self.type, value)
        self._check_range(parsed)
        if self.choices and parsed not in self.choices:
            raise UsageError(
                f"key '{self.name}': {parsed!r} is not one of {', '.join(map(str, self.choices))}"
            )
        return parsed

    def _scalar(self, kind: str, value: Any) -> Any:
        text = value.strip() if isinstance(value, str) else None
        bad = UsageError(f"key '{self.name}': expected {kind}, got {value!r}")
        if kind == "str":
            if not isinstance(value, str):
                raise bad
            return text
        if kind == "bool":
            if isinstance(value, bool):
                return value
            if text is not None and text.lower() in _TRUE | _FALSE:
                return text.lower() in _TRUE
            raise bad
        if isinstance(value, bool):
            raise bad
        if kind == "int":
            try:
                number = value if isinstance(value, int) else (
                    int(text) if text is not None else _raise(bad))
            except ValueError:
                raise bad from None
            if not INT64_MIN <= number <= INT64_MAX:  # stored as HDF5 int64 (seed, sizes)
                raise UsageError(f"key '{self.name}': {number} is outside the 64-bit integer range")
            return number
        if isinstance(value, (int, float)):
            number = float(value)
        else:
            try:
                number = float(text) if text is not None else _raise(bad)
            except ValueError:
                raise bad from None
        if not math.isfinite(number):
            raise UsageError(f"key '{self.name}': must be finite, got {value!r}")
        return number

    def _check_range(self, value: Any) -> None:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            rel = ">" if self.low_open else ">="
            raise UsageError(f"key '{self.name}': must be {rel} {self.low:g}, got {value!r}")
        if self.high is not None and value > self.high:
            raise UsageError(f"key '{self.name}': must be <= {self.high:g}, got {value!r}")


def _raise(error: Exception):
    raise error


PYTHON_TYPES = {"int": int, "float": float, "bool": bool, "str": str, "ints": list[int],
                "floats": list[float]}


class Config(Mapping):
    """Base of every schema's config class: a frozen dataclass, one attribute per key,
    that is also a read-only mapping of key name -> value."""

    def __getitem__(self, name: str) -> Any:
        if name not in self.__dataclass_fields__:
            raise KeyError(name)
        return getattr(self, name)

    def __iter__(self) -> Iterator[str]:
        return iter(self.__dataclass_fields__)

    def __len__(self) -> int:
        return len(self.__dataclass_fields__)

    def replace(self, **changes: Any) -> Config:
        """A copy with some keys changed (values as given, not parsed)."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class Schema:
    """The keys of one experiment, in display order; name: that of its config class."""

    keys: tuple[Key, ...]
    name: str = "Config"
    by_name: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "by_name", {k.name: k for k in self.keys})

    @functools.cached_property
    def config_class(self) -> type[Config]:
        """The frozen dataclass of this schema's configs (fields in key order, each field's
        metadata["key"] its Key)."""
        reserved = {n for n in dir(Config) if not n.startswith("_")}
        clash = [k.name for k in self.keys if k.name in reserved or not k.name.isidentifier()]
        if clash:
            raise ValueError(f"key {clash[0]!r} cannot be a config attribute")
        fields = [(k.name, PYTHON_TYPES[k.type], field(metadata={"key": k})) for k in self.keys]
        return dataclasses.make_dataclass(self.name, fields, bases=(Config,), frozen=True,
                                          eq=False)

    def typed(self, config: Mapping[str, Any]) -> Config:
        """config as this schema's config class (values already resolved, e.g. a sweep
        point built as a dict); an instance of it is returned as is."""
        if isinstance(config, self.config_class):
            return config
        return self.config_class(**config)

    def defaults(self) -> dict[str, Any]:
        return {k.name: k.default for k in self.keys}

    def unknown(self, name: str) -> UsageError:
        """The error for a key the schema lacks: the closest known keys, else all of them."""
        close = difflib.get_close_matches(name, self.by_name, n=3, cutoff=0.6)
        hint = (f"did you mean {' or '.join(repr(c) for c in close)}?" if close
                else f"known: {', '.join(self.by_name)}")
        return UsageError(f"unknown key {name!r} ({hint})")

    def resolve(self, *layers: dict[str, Any]) -> Config:
        """Defaults overridden by each layer in turn (TOML table, then --set pairs), as a
        config instance.

        Raises UsageError for an unknown key or a bad value.
        """
        config = self.defaults()
        for layer in layers:
            where = getattr(layer, "where", None)
            for name, value in layer.items():
                try:
                    if name not in self.by_name:
                        raise self.unknown(name)
                    config[name] = self.by_name[name].parse(value)
                except UsageError as exc:
                    raise UsageError(f"{where(name)}: {exc}" if where else str(exc)) from None
        missing = [k for k, v in config.items() if v is None and self.by_name[k].type != "str"]
        if missing:
            raise UsageError(f"key '{missing[0]}': no value given and no default")
        return self.config_class(**config)


def parse_assignments(pairs: list[str], option: str = "--set") -> dict[str, str]:
    """['KEY=VALUE', ...] -> {KEY: VALUE} (values still text)."""
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"{option} {pair!r}: expected KEY=VALUE")
        out[name.strip()] = value
    return out


class ConfigFile(dict):
    """The keys of a config file; `source` names the file (and the line of each key)
    in error messages."""

    def __init__(self, values: dict, path: str, lines: dict[str, int]):
        super().__init__(values)
        self.path, self.lines = path, lines

    def where(self, name: str) -> str:
        """"FILE, line N" of a key (FILE alone if its line is not known)."""
        return f"{self.path}, line {self.lines[name]}" if name in self.lines else self.path


def load_toml(path: str, experiment: str | None = None) -> ConfigFile:
    """Read a TOML config file: keys at top level, or all under one [EXPERIMENT] table (the
    experiment run). UsageError naming the path (and line) if unreadable or malformed."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python < 3.11
        import tomli as tomllib
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
        values = tomllib.loads(raw.decode("utf-8"))
    except OSError as exc:
        raise UsageError(f"{path}: cannot read config ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not a UTF-8 text file") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: malformed TOML ({exc})") from None
    tables = [k for k, v in values.items() if isinstance(v, dict)]
    if tables:
        if experiment is not None and tables == [experiment] and len(values) == 1:
            values = values[experiment]
        else:
            wanted = f"[{experiment}]" if experiment else "[EXPERIMENT]"
            raise UsageError(f"{path}: table [{tables[0]}]: put the keys at top level or all "
                             f"under one {wanted} table naming the experiment run")
    lines = {}
    for number, line in enumerate(raw.decode("utf-8").splitlines(), 1):
        name = line.split("=", 1)[0].strip()
        if "=" in line and name in values and name not in lines:
            lines[name] = number
    return ConfigFile(values, path, lines)
