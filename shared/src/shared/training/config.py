"""Dataclass configs: load, override, validate, presets, CLI.

A package's config is a tree of ``@dataclass`` classes (optionally deriving from :class:`Config`). Each class may define
``validate(self)`` and call the ``require_*`` helpers; :func:`validate_config` walks the tree (children first, then
the parent, so cross-field checks see valid children) and a failing helper raises :class:`FieldError` (a
:class:`~shared.errors.ConfigError`) whose message names the dotted field, the bad value and the fix::

    @dataclass
    class TrainConfig(Config):
        lr: float = config_field(3e-4, "AdamW learning rate")
        sampler: str = config_field("flow_grpo", "SDE kind")

        def validate(self) -> None:
            require_positive(self, "lr")
            require_in(self, "sampler", ["flow_grpo", "dance", "cps", "ddim"])

    cfg = load_config(RunConfig, "run.toml", ["train.lr=1e-4"], preset="sd35")   # validated

Load order: dataclass defaults < preset < file (JSON or TOML) < ``--set`` overrides. Unknown keys raise and list close
matches; values are coerced to the annotated type (``"1e-4"`` → float, ``"true"`` → bool, ``"1,2"`` → list[int],
``"none"`` → None for optional fields, Literal and Enum checked). :func:`build_arg_parser` / :func:`parse_config` give a
package ``--config FILE``, ``--preset NAME``, repeated ``--set KEY=VALUE`` and ``--print-config``, with a
``--help`` that lists every field with its ``metadata["help"]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import enum
import json
import math
import sys
import tomllib
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path, PurePath
from typing import Any, TypeVar

from shared.errors import ConfigError

__all__ = [
    "Config",
    "FieldError",
    "RunFolderConfig",
    "build_arg_parser",
    "config_field",
    "get_preset",
    "list_presets",
    "load_config",
    "parse_config",
    "register_preset",
    "require",
    "require_in",
    "require_non_negative",
    "require_path_exists",
    "require_positive",
    "require_range",
    "save_config",
    "to_dict",
    "validate_config",
]

C = TypeVar("C")
_MISSING = dataclasses.MISSING


# --------------------------------------------------------------------------------------------------------------------
# errors


class FieldError(ConfigError):
    """A config field failed validation or coercion.

    Attributes: ``field`` (dotted path, e.g. ``"train.lr"``), ``value``, ``problem``, ``fix`` and ``source`` (the
    config file it came from, when known). ``str(err)`` reads
    ``config field 'train.lr' = -1.0: must be > 0. Fix: set train.lr to a positive number, e.g. --set train.lr=0.0001``.
    In ``fix`` the placeholder ``{field}`` stands for the dotted path, so nesting rewrites it.
    """

    def __init__(self, field: str, value: Any, problem: str, fix: str, source: str | None = None):
        self._fix_template = fix
        self.field, self.value, self.problem, self.source = field, value, problem, source
        self.fix = fix.replace("{field}", field)
        where = f" (from {source})" if source else ""
        shown = repr(str(value)) if isinstance(value, PurePath) else repr(value)
        super().__init__(f"config field '{field}' = {shown}{where}: {problem}. Fix: {self.fix}")

    def prefixed(self, prefix: str) -> FieldError:
        """The same error with ``prefix.`` prepended to the field path."""
        field = f"{prefix}.{self.field}" if prefix else self.field
        return FieldError(field, self.value, self.problem, self._fix_template, self.source)

    def with_source(self, source: str) -> FieldError:
        return FieldError(self.field, self.value, self.problem, self._fix_template, source)


# --------------------------------------------------------------------------------------------------------------------
# base class and field helper


class Config:
    """Optional base for config dataclasses: a no-op ``validate()`` hook plus convenience methods."""

    def validate(self) -> None:
        """Override and call ``require_*`` helpers. Children are validated before their parent."""

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @classmethod
    def load(cls: type[C], source: str | Path | Mapping[str, Any] | None = None,
             overrides: Sequence[str] = (), *, preset: str | None = None, validate: bool = True) -> C:
        """:func:`load_config` for this class."""
        return load_config(cls, source, overrides, preset=preset, validate=validate)


def config_field(default: Any = _MISSING, help: str = "", *,
                 default_factory: Callable[[], Any] | Any = _MISSING, **kwargs: Any) -> Any:
    """``dataclasses.field`` with a ``help`` string stored in ``metadata["help"]`` (shown by ``--help``)."""
    metadata = dict(kwargs.pop("metadata", None) or {})
    if help:
        metadata["help"] = help
    if default_factory is not _MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata, **kwargs)
    return dataclasses.field(default=default, metadata=metadata, **kwargs)


# --------------------------------------------------------------------------------------------------------------------
# validation helpers


def _get(cfg: Any, name: str) -> Any:
    obj = cfg
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def require(cfg: Any, name: str, condition: bool, problem: str, fix: str) -> None:
    """Raise :class:`FieldError` for ``cfg.<name>`` with ``problem`` and ``fix`` unless ``condition`` holds."""
    if not condition:
        raise FieldError(name, _get(cfg, name), problem, fix)


def _require_number(cfg: Any, name: str, value: Any, example: Any) -> None:
    if not _is_number(value) or (isinstance(value, float) and math.isnan(value)):
        raise FieldError(name, value, "must be a number", f"set {{field}} to a number, e.g. --set {{field}}={example}")


def require_positive(cfg: Any, name: str) -> None:
    """``cfg.<name>`` must be a number > 0."""
    value = _get(cfg, name)
    _require_number(cfg, name, value, 1)
    if not value > 0:
        example = 1 if isinstance(value, int) else 1e-4
        raise FieldError(name, value, "must be > 0",
                         f"set {{field}} to a positive number, e.g. --set {{field}}={example}")


def require_non_negative(cfg: Any, name: str) -> None:
    """``cfg.<name>`` must be a number >= 0."""
    value = _get(cfg, name)
    _require_number(cfg, name, value, 0)
    if not value >= 0:
        raise FieldError(name, value, "must be >= 0", "set {field} to 0 or a positive number, e.g. --set {field}=0")


def require_int(cfg: Any, name: str, low: int) -> None:
    """``cfg.<name>`` must be an int (not a bool) >= ``low``."""
    value = _get(cfg, name)
    if not (isinstance(value, int) and not isinstance(value, bool) and value >= low):
        raise FieldError(name, value, f"must be an int >= {low}",
                         f"set {{field}} to an int >= {low}, e.g. --set {{field}}={max(low, 1)}")


def require_range(cfg: Any, name: str, low: float | None = None, high: float | None = None, *,
                  low_inclusive: bool = True, high_inclusive: bool = True) -> None:
    """``cfg.<name>`` must lie in the interval given by ``low``/``high`` (either may be None = unbounded)."""
    value = _get(cfg, name)
    lo_br, hi_br = ("[" if low_inclusive else "("), ("]" if high_inclusive else ")")
    interval = f"{lo_br}{'-inf' if low is None else low}, {'inf' if high is None else high}{hi_br}"
    example = low if low is not None and low_inclusive else (high if high is not None and high_inclusive else 0)
    if low is not None and high is not None:
        example = (low + high) / 2 if isinstance(value, float) else example
    _require_number(cfg, name, value, example)
    ok = True
    if low is not None:
        ok &= value >= low if low_inclusive else value > low
    if high is not None:
        ok &= value <= high if high_inclusive else value < high
    if not ok:
        raise FieldError(name, value, f"must be in {interval}",
                         f"set {{field}} to a value in {interval}, e.g. --set {{field}}={example}")


def require_in(cfg: Any, name: str, choices: Iterable[Any]) -> None:
    """``cfg.<name>`` must be one of ``choices``; the error lists them and the closest match."""
    value = _get(cfg, name)
    choices = list(choices)
    if value in choices:
        return
    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    listed = ", ".join(repr(c) for c in choices)
    raise FieldError(name, value, f"must be one of {listed}", f"{hint}set {{field}} to one of {listed}, "
                     f"e.g. --set {{field}}={close[0] if close else choices[0]}")


def require_path_exists(cfg: Any, name: str, *, kind: str | None = None, allow_none: bool = False) -> None:
    """``cfg.<name>`` must name an existing path (``kind="file"`` or ``"dir"`` to demand one; None for either)."""
    value = _get(cfg, name)
    if value is None and allow_none:
        return
    if kind not in (None, "file", "dir"):
        raise ValueError(f"kind must be None, 'file' or 'dir', got {kind!r}")
    what = {"file": "a file", "dir": "a directory", None: "a path"}[kind]
    if not isinstance(value, str | PurePath) or not str(value):
        raise FieldError(name, value, f"must be {what}", "set {field} to an existing path, e.g. --set {field}=PATH")
    path = Path(value)
    if not path.exists():
        raise FieldError(name, value, f"does not exist (expected {what}; relative paths start at {Path.cwd()})",
                         f"create it or point {{field}} at an existing {what.split()[-1]}")
    if kind == "file" and not path.is_file():
        raise FieldError(name, value, "must be a file, but it is a directory", "point {field} at a file inside it")
    if kind == "dir" and not path.is_dir():
        raise FieldError(name, value, "must be a directory, but it is a file", "point {field} at a directory")


@dataclasses.dataclass
class RunFolderConfig(Config):
    """The ``run`` section every trainer shares: the run folder (config.json, metrics.jsonl, checkpoints/) and how
    checkpoints are kept. A trainer subclasses it, redeclares ``dir`` and ``save_every`` with its own defaults and
    adds its fields; a subclass's ``validate`` calls ``super().validate()``.
    """

    dir: str = config_field("outputs/run", "run folder: config.json, metrics.jsonl, checkpoints/")
    resume: bool = config_field(True, "continue from the latest checkpoint in dir/checkpoints if there is one")
    save_every: int = config_field(10, "checkpoint every n steps (and at the end; 0 = only at the end)")
    keep_last: int = config_field(2, "checkpoints kept")
    progress: bool = config_field(True, "show progress bars")

    def validate(self) -> None:
        require(self, "dir", bool(self.dir), "is empty", "set {field} to a folder, e.g. --set {field}=outputs/run")
        require_int(self, "save_every", 0)
        require_int(self, "keep_last", 1)


def validate_config(cfg: Any) -> Any:
    """Validate a config tree (nested dataclasses first, then ``cfg.validate()``); return ``cfg``.

    Errors from nested configs are re-raised with the dotted field path (``train.lr``).
    """
    if not dataclasses.is_dataclass(cfg) or isinstance(cfg, type):
        raise TypeError(f"validate_config expects a dataclass instance, got {type(cfg).__name__}")
    for f in dataclasses.fields(cfg):
        child = getattr(cfg, f.name)
        if dataclasses.is_dataclass(child) and not isinstance(child, type):
            try:
                validate_config(child)
            except FieldError as err:
                raise err.prefixed(f.name) from None
    hook = getattr(cfg, "validate", None)
    if callable(hook):
        hook()
    return cfg


# --------------------------------------------------------------------------------------------------------------------
# conversion to plain data


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return _plain(value.value)
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(v) for v in value]
    return value


def to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON/TOML-ready nested dict of ``cfg`` (paths → str, tuples → lists, enums → values)."""
    if not dataclasses.is_dataclass(cfg) or isinstance(cfg, type):
        raise TypeError(f"to_dict expects a dataclass instance, got {type(cfg).__name__}")
    return _plain(cfg)


def save_config(cfg: Any, path: str | Path) -> Path:
    """Write ``to_dict(cfg)`` as indented JSON (loadable with :func:`load_config`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_dict(cfg), indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------------------------------------
# type coercion


def _hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # annotations that cannot be resolved (e.g. classes local to a function): use raw types
        return {f.name: (f.type if not isinstance(f.type, str) else Any) for f in dataclasses.fields(cls)}


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) < len(typing.get_args(tp)) and len(args) == 1:
            return args[0], True
    return tp, False


_TRUE = {"true", "1", "yes", "on", "y", "t"}
_FALSE = {"false", "0", "no", "off", "n", "f"}


class _CoerceError(Exception):
    pass


def _parse_seq_str(text: str) -> list[Any]:
    text = text.strip()
    if text.startswith("["):
        try:
            out = json.loads(text)
        except json.JSONDecodeError as e:
            raise _CoerceError(f"not a valid JSON list ({e.msg})") from None
        if not isinstance(out, list):
            raise _CoerceError("not a list")
        return out
    return [] if not text else [p.strip() for p in text.split(",")]


def _coerce(value: Any, tp: Any, path: str, source: str | None) -> Any:
    """Convert ``value`` (from a file or a CLI string) to annotation ``tp`` or raise FieldError."""
    try:
        return _coerce_inner(value, tp, path, source)
    except _CoerceError as e:
        fix = f"give {path} a value of type {_type_name(tp)}, e.g. --set {path}={_example(tp)}"
        raise FieldError(path, value, f"expected {_type_name(tp)}, {e}", fix, source) from None


def _example(tp: Any) -> str:
    tp, _ = _unwrap_optional(tp)
    if typing.get_origin(tp) is typing.Literal:
        return str(typing.get_args(tp)[0])
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return next(iter(tp.__members__))
    if typing.get_origin(tp) in (list, tuple):
        item = _example(typing.get_args(tp)[0]) if typing.get_args(tp) else "text"
        return f"{item},{item} (comma-separated) or '[{json.dumps(item)}, {json.dumps(item)}]' (a JSON list)"
    return {bool: "true", int: "1", float: "0.001", str: "text"}.get(tp, "...")


def _coerce_inner(value: Any, tp: Any, path: str, source: str | None) -> Any:
    if tp is Any or tp is object:
        return value
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and (value is None or (isinstance(value, str) and value.lower() in ("none", "null"))):
            return None
        problems = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce_inner(value, arg, path, source)
            except (_CoerceError, FieldError) as e:
                problems.append(str(e))
        raise _CoerceError("; ".join(problems) or "got None")
    if origin is typing.Literal:
        for choice in args:
            if value == choice or (isinstance(value, str) and not isinstance(choice, str) and value == str(choice)):
                return choice
        close = difflib.get_close_matches(str(value), [str(a) for a in args], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise _CoerceError(f"got {value!r}{hint}")
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                raise _CoerceError("got a string that is not a JSON object") from None
        if not isinstance(value, Mapping):
            raise _CoerceError(f"got {type(value).__name__}; give a table/object of its fields")
        return _from_dict(tp, value, path, source)
    if origin in (list, tuple, set, frozenset) or tp in (list, tuple, set, frozenset) or origin in (
            Sequence, typing.Sequence):
        container = origin or tp
        if isinstance(value, str):
            value = _parse_seq_str(value)
        if not isinstance(value, list | tuple | set | frozenset):
            raise _CoerceError(f"got {type(value).__name__}")
        items = list(value)
        if container is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            if len(args) != len(items):
                raise _CoerceError(f"expected {len(args)} items, got {len(items)}")
            pairs = enumerate(zip(items, args, strict=True))
            return tuple(_coerce(v, a, f"{path}[{i}]", source) for i, (v, a) in pairs)
        elem = args[0] if args else Any
        out = [_coerce(v, elem, f"{path}[{i}]", source) for i, v in enumerate(items)]
        if container in (Sequence, typing.Sequence, list):
            return out
        return container(out)
    if origin in (dict, Mapping) or tp in (dict, Mapping):
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                raise _CoerceError("got a string that is not a JSON object") from None
        if not isinstance(value, Mapping):
            raise _CoerceError(f"got {type(value).__name__}")
        kt, vt = args if args else (Any, Any)
        return {_coerce(k, kt, path, source): _coerce(v, vt, f"{path}.{k}", source) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise _CoerceError(f"got {value!r} (use true or false)")
    if tp is int:
        if isinstance(value, bool):
            raise _CoerceError(f"got bool {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                try:
                    f = float(value)
                except ValueError:
                    raise _CoerceError(f"got {value!r}") from None
                if f.is_integer():
                    return int(f)
        raise _CoerceError(f"got {value!r} ({type(value).__name__})")
    if tp is float:
        if _is_number(value):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                pass
        raise _CoerceError(f"got {value!r} ({type(value).__name__})")
    if tp is str:
        if isinstance(value, str):
            return value
        raise _CoerceError(f"got {type(value).__name__} {value!r} (quote it)")
    if isinstance(tp, type) and issubclass(tp, PurePath):
        if isinstance(value, str | PurePath):
            return tp(value)
        raise _CoerceError(f"got {type(value).__name__}")
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        if isinstance(value, tp):
            return value
        if isinstance(value, str) and value in tp.__members__:
            return tp[value]
        for member in tp:
            if member.value == value or (isinstance(value, str) and str(member.value) == value):
                return member
        raise _CoerceError(f"got {value!r}; choices: {', '.join(tp.__members__)}")
    if isinstance(tp, type):
        if isinstance(value, tp):
            return value
        raise _CoerceError(f"got {type(value).__name__}")
    return value


def _from_dict(cls: type[C], data: Mapping[str, Any], prefix: str, source: str | None) -> C:
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in data.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if key not in fields:
            raise _unknown_key(path, str(key), list(fields), cls, source)
        field = fields[key]
        if isinstance(value, Mapping) and field.default_factory is not _MISSING:
            # A partial nested section (e.g. only train.lr set) completes from this field's own default, so a
            # subclass's `train: TrainConfig = config_field(default_factory=lambda: TrainConfig(units=...))` holds.
            default = field.default_factory()
            if dataclasses.is_dataclass(default) and not isinstance(default, type):
                value = _deep_merge(to_dict(default), value)
        kwargs[key] = _coerce(value, hints.get(key, Any), path, source)
    missing = [n for n, f in fields.items() if n not in kwargs and f.default is _MISSING
               and f.default_factory is _MISSING]
    if missing:
        path = f"{prefix}.{missing[0]}" if prefix else missing[0]
        raise FieldError(path, None, "is required and has no default",
                         f"set it in the config file or with --set {path}=...", source)
    return cls(**kwargs)


def _unknown_key(path: str, key: str, known: list[str], cls: type, source: str | None) -> ConfigError:
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.5)
    where = f" in {source}" if source else ""
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return ConfigError(f"unknown config key '{path}'{where} ({cls.__name__} has no field '{key}').{hint} "
                       f"Known fields: {', '.join(known)}. Fix: rename or remove the key.")


# --------------------------------------------------------------------------------------------------------------------
# loading


def _read_file(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise ConfigError(f"config file not found: {path} (cwd: {Path.cwd()}). Fix: check the path passed to --config.")
    if not path.is_file():
        raise ConfigError(f"config path is not a file: {path}. Fix: pass a .json or .toml file.")
    suffix = path.suffix.lower()
    if suffix not in (".json", ".toml"):
        raise ConfigError(f"unsupported config format '{suffix}' for {path}. Fix: use a .json or .toml file.")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file {path} is not UTF-8 text ({e.reason} at byte {e.start}). "
                          "Fix: save it as UTF-8.") from None
    if not text.strip():
        raise ConfigError(f"config file {path} is empty. Fix: write a JSON object / TOML table of fields, "
                          "or drop --config to use the defaults.")
    try:
        data = json.loads(text) if suffix == ".json" else tomllib.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"config file {path} is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}. "
                          "Fix: correct the syntax there.") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}. Fix: correct the syntax there.") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a JSON object of fields, got {type(data).__name__}. "
                          "Fix: wrap the fields in {...}.")
    return data


def _deep_merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = _deep_merge(dict(out[k]), v)
        else:
            out[k] = v
    return out


def _field_paths(cls: type, prefix: str = "") -> list[str]:
    out = []
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        path = f"{prefix}.{f.name}" if prefix else f.name
        out.append(path)
        tp, _ = _unwrap_optional(hints.get(f.name, Any))
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            out.extend(_field_paths(tp, path))
    return out


def _apply_override(cls: type, data: dict[str, Any], override: str) -> dict[str, Any]:
    if "=" not in override:
        raise ConfigError(f"override {override!r} must look like KEY=VALUE, e.g. train.lr=1e-4 "
                          "(nested fields are joined with dots).")
    key, _, raw = override.partition("=")
    key = key.strip()
    parts = key.split(".")
    owner: type = cls
    tp: Any = None
    for i, part in enumerate(parts):
        names = [f.name for f in dataclasses.fields(owner)]
        if part not in names:
            close = difflib.get_close_matches(key, _field_paths(cls), n=3, cutoff=0.5)
            hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise ConfigError(f"unknown config key '{key}' in override {override!r} ({owner.__name__} has no "
                              f"field '{part}').{hint} Fix: use one of the fields listed by --help.")
        tp = _hints(owner).get(part, Any)
        if i < len(parts) - 1:
            inner, _ = _unwrap_optional(tp)
            if not (isinstance(inner, type) and dataclasses.is_dataclass(inner)):
                raise ConfigError(f"override {override!r}: '{'.'.join(parts[:i + 1])}' is not a nested config, "
                                  f"so it has no field '{parts[i + 1]}'. Fix: drop the suffix.")
            owner = inner
    value = _coerce(raw, tp, key, "--set")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        nested = to_dict(value)  # a whole section: merged onto what is there
        for part in reversed(parts):
            nested = {part: nested}
        return _deep_merge(data, nested)
    # a plain field (dicts included) is replaced, so `--set reward.kwargs={}` clears the preset's entries
    out = dict(data)
    node = out
    for part in parts[:-1]:
        child = node.get(part)
        node[part] = dict(child) if isinstance(child, Mapping) else {}
        node = node[part]
    node[parts[-1]] = value
    return out


def load_config(cls: type[C], source: str | Path | Mapping[str, Any] | None = None,
                overrides: Sequence[str] = (), *, preset: str | None = None, validate: bool = True) -> C:
    """Build a validated ``cls`` from (in increasing priority) defaults, ``preset``, ``source`` and ``overrides``.

    ``source``: a ``.json``/``.toml`` path, a nested dict, or None. ``overrides``: ``["train.lr=1e-4", ...]``.
    A missing/empty/malformed file, an unknown key (with close matches), a value of the wrong type or a failed
    ``validate()`` raises :class:`~shared.errors.ConfigError` before anything else runs.
    """
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"load_config expects a dataclass type, got {cls!r}")
    data: dict[str, Any] = to_dict(get_preset(cls, preset)) if preset else {}
    file_label = None
    if isinstance(source, str | PurePath):
        file_label = str(source)
        data = _deep_merge(data, _read_file(Path(source)))
    elif isinstance(source, Mapping):
        data = _deep_merge(data, source)
    elif source is not None:
        raise TypeError(f"source must be a path, a mapping or None, got {type(source).__name__}")
    if isinstance(overrides, str):
        overrides = [overrides]
    for ov in overrides:
        data = _apply_override(cls, data, ov)
    cfg = _from_dict(cls, data, "", file_label)
    if validate:
        try:
            validate_config(cfg)
        except FieldError as err:
            raise (err.with_source(file_label) if file_label and err.source is None else err) from None
    return cfg


# --------------------------------------------------------------------------------------------------------------------
# presets

_PRESETS: dict[str, dict[str, Callable[[], Any]]] = {}


def _namespace(ns: type | str) -> str:
    return ns if isinstance(ns, str) else f"{ns.__module__}.{ns.__qualname__}"


def register_preset(namespace: type | str, name: str | None = None) -> Callable[[Callable[[], C]], Callable[[], C]]:
    """Decorator registering a zero-argument function returning a config as preset ``name`` (default: its name).

    ``namespace`` is the config class (or any string). Presets are named functions, so each one reads top to bottom::

        @register_preset(RunConfig)
        def flow_grpo_sd35() -> RunConfig:
            return RunConfig(train=TrainConfig(lr=3e-4), ...)
    """

    def deco(fn: Callable[[], C]) -> Callable[[], C]:
        key = name or fn.__name__
        table = _PRESETS.setdefault(_namespace(namespace), {})
        if key in table and table[key] is not fn:
            raise ValueError(f"preset {key!r} is already registered for {_namespace(namespace)}")
        table[key] = fn
        return fn

    return deco


def list_presets(namespace: type | str) -> list[str]:
    """Names of the presets registered for ``namespace``, sorted."""
    return sorted(_PRESETS.get(_namespace(namespace), {}))


def get_preset(namespace: type | str, name: str) -> Any:
    """A fresh config from preset ``name``; an unknown name raises ConfigError listing the available ones."""
    table = _PRESETS.get(_namespace(namespace), {})
    label = namespace if isinstance(namespace, str) else namespace.__name__
    if name not in table:
        if not table:
            raise ConfigError(f"unknown preset {name!r}: no presets are registered for {label}. "
                              "Fix: drop --preset, or import the module that registers them.")
        close = difflib.get_close_matches(name, list(table), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown preset {name!r} for {label}.{hint} Available: {', '.join(sorted(table))}.")
    cfg = table[name]()
    if isinstance(namespace, type) and not isinstance(cfg, namespace):
        raise TypeError(f"preset {name!r} returned {type(cfg).__name__}, expected {namespace.__name__}")
    return cfg


# --------------------------------------------------------------------------------------------------------------------
# command line


def _fields_help(cls: type, prefix: str = "", default_obj: Any = None) -> list[str]:
    lines = []
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        path = f"{prefix}.{f.name}" if prefix else f.name
        tp = hints.get(f.name, Any)
        if f.default is not _MISSING:
            default = f.default
        elif f.default_factory is not _MISSING:
            default = f.default_factory()
        else:
            default = _MISSING
        inner, _ = _unwrap_optional(tp)
        if isinstance(inner, type) and dataclasses.is_dataclass(inner):
            head = f"  {path}: {inner.__name__}"
            lines.append(head + (f" — {f.metadata['help']}" if f.metadata.get("help") else ""))
            lines.extend(_fields_help(inner, path))
            continue
        shown = "(required)" if default is _MISSING else f"= {json.dumps(_plain(default))}"
        lines.append(f"  {path} ({_type_name(tp)}) {shown}")
        if f.metadata.get("help"):
            lines.append(f"      {f.metadata['help']}")
    return lines


def build_arg_parser(cls: type, *, prog: str | None = None, description: str | None = None,
                     parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """An argparse parser with ``--config``, ``--preset``, ``--set KEY=VALUE`` (repeatable) and ``--print-config``.

    ``--help`` lists every (nested) field with type, default and ``metadata["help"]``. Pass ``parser`` to add these
    options to an existing parser (its epilog is replaced by the field list).
    """
    doc = (cls.__doc__ or "").strip().splitlines()
    if parser is None:
        parser = argparse.ArgumentParser(prog=prog, description=description or (doc[0] if doc else None),
                                         formatter_class=argparse.RawDescriptionHelpFormatter)
    else:
        parser.formatter_class = argparse.RawDescriptionHelpFormatter
    presets = list_presets(cls)
    parser.add_argument("--config", metavar="FILE", help="JSON or TOML config file (fields below)")
    parser.add_argument("--preset", metavar="NAME",
                        help="start from a named preset" + (f": {', '.join(presets)}" if presets else " (none)"))
    parser.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="overrides",
                        help="override one field, e.g. --set train.lr=1e-4 (repeatable; applied last)")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved, validated config as JSON and exit")
    parser.epilog = "config fields (order: defaults < --preset < --config < --set):\n" + "\n".join(_fields_help(cls))
    return parser


def add_train_command(subparsers, cls: type, *, help: str, default_preset: str = "shapes",
                      note: str = "tiny shapes-world base, CPU, minutes", name: str = "train") -> argparse.ArgumentParser:
    """The ``train`` subcommand of a package CLI (``chunk-grpo train``, ``slas train``, ``mask-grpo train``): the config
    options of :func:`build_arg_parser` for ``cls``, its docstring as description, and ``default_preset`` when no
    ``--preset`` is given (``note`` says what that preset runs). ``name`` renames the subcommand (``mllm-rft sft``)."""
    train = subparsers.add_parser(name, formatter_class=argparse.RawDescriptionHelpFormatter, help=help,
                                  description=(cls.__doc__ or "").strip())
    build_arg_parser(cls, parser=train)
    train.set_defaults(preset=default_preset)
    train.description += f"\n\nWithout --preset the `{default_preset}` preset is used ({note})."
    return train


def parse_config(cls: type[C], argv: Sequence[str] | None = None, *,
                 parser: argparse.ArgumentParser | None = None) -> tuple[C, argparse.Namespace]:
    """Parse ``argv`` with :func:`build_arg_parser` and return ``(validated config, namespace)``.

    A ConfigError ends the program with exit status 2 and the error message (no traceback); ``--print-config``
    prints the config and exits 0.
    """
    parser = build_arg_parser(cls, parser=parser)
    args = parser.parse_args(argv)
    cfg = config_from_args(cls, args, parser)
    if cfg is None:
        sys.exit(0)
    return cfg, args


def config_from_args(cls: type[C], args: argparse.Namespace, parser: argparse.ArgumentParser) -> C | None:
    """The validated config of a namespace parsed by a :func:`build_arg_parser` parser (or subcommand parser).

    A ConfigError ends the program through ``parser.error`` (exit status 2, no traceback); with ``--print-config``
    the config is printed and None returned, so the caller stops there.
    """
    try:
        cfg = load_config(cls, args.config, args.overrides, preset=args.preset)
    except ConfigError as err:
        parser.error(str(err))
    if args.print_config:
        print(json.dumps(to_dict(cfg), indent=2))
        return None
    return cfg
