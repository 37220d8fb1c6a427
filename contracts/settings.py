"""Typed stage configs: one dataclass per stage, each default written once.

A field declared with :func:`option` carries its help, its allowed values and its range. From the
dataclass alone come the command-line flags (:func:`add_flags`), the YAML sections of a reproduce
config (:func:`derive` builds a section from a stage config) and the validation of both
(:func:`apply`): every value is typed and range-checked before any model loads, and a bad one fails
naming where it came from — ``file:line: section.key`` for YAML, ``--flag`` for the command line.

Values are typed strictly: booleans are ``true``/``false`` only, integers are not floats, and a number
that YAML 1.1 reads as a string (``1e-6``) is accepted where a float is expected.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
from dataclasses import MISSING, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

from contracts.errors import UserError


class ConfigError(UserError):
    """A bad setting; the message names where it came from and what is allowed."""


def option(default: Any = MISSING, *, default_factory: Any = MISSING, help: str = "", choices=None,
           ge: float | None = None, gt: float | None = None, le: float | None = None, lt: float | None = None,
           flags: tuple[str, ...] = (),
           flag: str | None = None, cli: bool = True, action: str | None = None, metavar: str | None = None,
           required: bool = False, valid=None):
    """A dataclass field with what a flag, a YAML key and their validation need to know.

    ``choices``/``ge``/``gt``/``le``/``lt`` are checked on every value (on each element of a list; ``choices``
    may be a function that gives them when asked, e.g. a registry's names);
    ``flag``: the flag's name (default ``--field-name``); ``flags``: extra spellings; ``cli=False``: no
    flag; ``action``: "store_true"/"store_false" for a bare switch; ``required``: the value must be set
    (a None default means "not given"); ``valid``: value → None if fine, else what is wrong with it.
    """
    md = dict(help=help, choices=choices if callable(choices) else tuple(choices) if choices else None, ge=ge, gt=gt,
              le=le, lt=lt, flags=tuple(flags),
              flag=flag, cli=cli, action=action, metavar=metavar, required=required, valid=valid)
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata=md)
    return field(default=default, metadata=md)


# ------------------------------------------------------------------------------------------ where


class Source:
    """Where values come from, to name them in errors."""

    def at(self, path: tuple[str, ...]) -> str:
        return ".".join(path)


class FlagSource(Source):
    """Flags, named as the command line spells them (``flags``: field name → flag, where it differs)."""

    def __init__(self, flags: dict[str, str] | None = None):
        self.flags = flags or {}

    def at(self, path: tuple[str, ...]) -> str:
        return self.flags.get(path[-1]) or "--" + path[-1].replace("_", "-")


class YamlSource(Source):
    """A YAML file, with the line of every key (from :func:`load_yaml`)."""

    def __init__(self, path: str | Path, lines: dict[tuple[str, ...], int] | None = None, prefix=()):
        self.path, self.lines, self.prefix = str(path), lines or {}, tuple(prefix)

    def at(self, path: tuple[str, ...]) -> str:
        full = (*self.prefix, *path)
        line = next((self.lines[full[:k]] for k in range(len(full), 0, -1) if full[:k] in self.lines), None)
        return f"{self.path}{':' + str(line) if line else ''}: {'.'.join(full)}"


class NamedSource(Source):
    def __init__(self, name: str):
        self.name = name

    def at(self, path: tuple[str, ...]) -> str:
        return f"{self.name}: {'.'.join(path)}"


def load_yaml(path: str | Path) -> tuple[dict, dict[tuple[str, ...], int]]:
    """A YAML mapping and the 1-based line of every key path in it."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found")
    text = p.read_text()
    try:
        data = yaml.safe_load(text)
        node = yaml.compose(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{p}:{mark.line + 1}" if mark else str(p)
        raise ConfigError(f"{where}: not valid YAML ({getattr(e, 'problem', None) or e}); fix the file") from None
    if data is None:
        return {}, {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping of settings at the top level, got {type(data).__name__}")
    lines: dict[tuple[str, ...], int] = {}

    def walk(n, prefix):
        if isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                key = (*prefix, str(k.value))
                lines[key] = k.start_mark.line + 1
                walk(v, key)

    walk(node, ())
    return data, lines


# ------------------------------------------------------------------------------------------ types


def _describe(tp) -> str:
    origin, args = get_origin(tp), get_args(tp)
    if origin in (Union, types.UnionType):
        parts = [_describe(a) for a in args if a is not type(None)]
        return " or ".join(parts) + (" or null" if type(None) in args else "")
    if origin in (list, tuple):
        return f"a list of {_describe(args[0])}"
    if origin is dict:
        return "a mapping"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
        tp, getattr(tp, "__name__", str(tp)))


_TRUE, _FALSE = ("true", "yes", "1", "on"), ("false", "no", "0", "off")


def coerce(tp, value, where: str = "", *, text: bool = False):
    """``value`` as type ``tp``, or a ConfigError saying "``where``: expected …, got …".

    The one walker over the type grammar (unions, lists, tuples, mappings, bool, int, float, str), for
    YAML values and (``text``) the text of a command-line flag: there booleans may be yes/no/on/off/1/0,
    numbers are parsed and a list is comma-separated. YAML values are typed strictly (module docstring).
    """
    origin, args = get_origin(tp), get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if type(None) in args and (value is None or (text and str(value).lower() in ("none", "null"))):
            return None
        for a in (a for a in args if a is not type(None)):
            try:
                return coerce(a, value, where, text=text)
            except ConfigError:
                pass
        raise _bad(where, tp, value)
    if is_dataclass(tp):
        raise ConfigError(f"{where}: expected a mapping of settings, got {value!r}")
    if origin in (list, tuple):
        if text and isinstance(value, str):
            value = [t.strip() for t in value.split(",") if t.strip()]
        if not isinstance(value, (list, tuple)):
            raise _bad(where, tp, value)
        items = [coerce(args[0], v, f"{where}[{i}]" if where else "", text=text) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if text or not isinstance(value, dict):
            raise _bad(where, tp, value)
        return {coerce(args[0], k, f"{where} key"): coerce(args[1], v, f"{where}.{k}") for k, v in value.items()}
    ok = _scalar(tp, value, text)
    if ok is None:
        raise _bad(where, tp, value)
    return ok


def _scalar(tp, value, text: bool):
    """``value`` as the scalar type ``tp`` (None: it is not one)."""
    if tp not in (bool, int, float, str):
        raise TypeError(f"settings: type {tp!r} is not supported")
    if tp is str:
        return value if isinstance(value, str) else None
    if text and isinstance(value, str):
        low = value.strip().lower()
        if tp is bool:
            return True if low in _TRUE else False if low in _FALSE else None
        try:
            return tp(low)
        except ValueError:
            return None
    if isinstance(value, bool):
        return value if tp is bool else None
    if tp is int:
        return value if isinstance(value, int) else None
    if tp is float:
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 1e-6 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                return None
    return None


def _bad(where: str, tp, value) -> ConfigError:
    return ConfigError(f"{where + ': ' if where else ''}expected {_describe(tp)}, got {value!r}")


def choices_of(md) -> tuple | None:
    c = md.get("choices")
    return tuple(c()) if callable(c) else c


def check_range(md, value, where: str) -> None:
    """The field's choices and bounds, on a value or on each element of a list."""
    if value is None:
        return
    problem = md.get("valid") and md["valid"](value)
    if problem:
        raise ConfigError(f"{where}: {problem}, got {value!r}")
    choices = choices_of(md)
    for i, v in enumerate(value if isinstance(value, (list, tuple)) else [value]):
        at = f"{where}[{i}]" if isinstance(value, (list, tuple)) else where
        if choices and v not in choices:
            raise ConfigError(f"{at}: {v!r} is not one of {', '.join(map(str, choices))}")
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            for op, text in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
                bound = md.get(op)
                if bound is None:
                    continue
                good = {"ge": v >= bound, "gt": v > bound, "le": v <= bound, "lt": v < bound}[op]
                if not good:
                    raise ConfigError(f"{at}: must be {text} {bound:g}, got {v!r}")


# ---------------------------------------------------------------------------------------- building


def _hints(cls) -> dict[str, Any]:
    return get_type_hints(cls)


def apply(obj, updates: dict, source: Source, path: tuple[str, ...] = ()):
    """A copy of the dataclass ``obj`` with ``updates`` (a mapping, e.g. a YAML section) typed, checked
    and applied; nested dataclass fields take nested mappings. Unknown keys are errors."""
    cls = type(obj)
    if not isinstance(updates, dict):
        raise ConfigError(f"{source.at(path) if path else source.at(('<top>',))}: expected a mapping of settings, "
                          f"got {type(updates).__name__}")
    hints = _hints(cls)
    by_name = {f.name: f for f in fields(cls)}
    changes = {}
    for key, value in updates.items():
        key = str(key)
        name = key.replace("-", "_")
        where = source.at((*path, key))
        if name not in by_name:
            import difflib

            close = difflib.get_close_matches(name, by_name, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"known here: {', '.join(sorted(by_name))}"
            hint = f"it is set {cls.__moved__[name]}" if name in getattr(cls, "__moved__", {}) else hint
            raise ConfigError(f"{where}: unknown setting ({hint})")
        tp = hints[name]
        if is_dataclass(tp) and not (value is None and type(None) in get_args(tp)):
            changes[name] = apply(getattr(obj, name), value if value is not None else {}, source, (*path, key))
            continue
        v = coerce(tp, value, where)
        check_range(by_name[name].metadata, v, where)
        changes[name] = v
    return dataclasses.replace(obj, **changes)


def check_required(obj, source: Source, path: tuple[str, ...] = ()) -> None:
    for f in fields(obj):
        if f.metadata.get("required") and getattr(obj, f.name) in (None, ""):
            raise ConfigError(f"{source.at((*path, f.name))}: required, but not given")


def section(base, *, drop=(), optional: bool = False, moved: dict[str, str] | None = None):
    """Class decorator: the decorated class becomes a dataclass with ``base``'s fields (their types,
    defaults and metadata) minus ``drop``, followed by its own annotated fields. A reproduce config's
    sections are declared so (``@section(TrainConfig, ...) class TrainSection:``): each stage's defaults
    are written once, in the stage. ``optional``: every field taken from ``base`` defaults to None, meaning
    "not set here" (e.g. SFT settings that fall back to the training section). ``moved``: a dropped name →
    where it is set instead (said when a config gives it)."""

    def make(cls):
        hints = _hints(base)
        out = []
        for f in fields(base):
            if f.name in drop:
                continue
            md = dict(f.metadata)
            if optional:
                md["required"] = False
                out.append((f.name, hints[f.name] | None, field(default=None, metadata=md)))
            elif f.default_factory is not MISSING:
                out.append((f.name, hints[f.name], field(default_factory=f.default_factory, metadata=md)))
            else:
                out.append((f.name, hints[f.name], field(default=f.default, metadata=md)))
        own = dataclasses.dataclass(cls)
        out += [(f.name, f.type, f) for f in fields(own)]
        return dataclasses.make_dataclass(cls.__name__, out, namespace={"__doc__": cls.__doc__, "__moved__": moved or {},
                                                                        "__module__": cls.__module__})

    return make


def values(obj, names=None) -> dict[str, Any]:
    """The fields of a dataclass as a flat dict (``names``: only these; nested dataclasses stay objects)."""
    return {f.name: getattr(obj, f.name) for f in fields(obj) if names is None or f.name in names}


# ------------------------------------------------------------------------------------------- flags


def _flag_type(tp, flag: str):
    """argparse ``type=``: the text of a flag as ``tp`` (lists comma-separated)."""

    def parse(text: str):
        try:
            return coerce(tp, text, text=True)
        except ConfigError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    parse.__name__ = _describe(tp)  # argparse names the type in its message
    return parse


def _default_text(f) -> str:
    if f.default_factory is not MISSING:
        d = f.default_factory()
    else:
        d = f.default
    if d in (None, "", MISSING):
        return ""
    if isinstance(d, (list, tuple)):
        d = ",".join(map(str, d))
    text = str(d)
    return f" (default: {text if len(text) < 40 else text[:37] + '...'})"


def add_flags(parser, cls, *, skip=(), only=None) -> list[str]:
    """A flag for every option of ``cls`` (``--max-length`` for ``max_length``); default None, so that
    only flags actually given override a config file. Returns the field names it added."""
    hints = _hints(cls)
    added = []
    for f in fields(cls):
        md = f.metadata
        if not md.get("cli", True) or f.name in skip or (only is not None and f.name not in only):
            continue
        tp = hints[f.name]
        if is_dataclass(tp):
            continue
        names = [md.get("flag") or f"--{f.name.replace('_', '-')}", *md.get("flags", ())]
        # a switch's default is its absence, and a help that names its default needs it once
        said = md.get("action") or "default" in (md.get("help") or "")
        helptext = (md.get("help") or "") + ("" if said else _default_text(f))
        if choices_of(md):
            helptext += f" [{'|'.join(map(str, choices_of(md)))}]"
        kw: dict[str, Any] = dict(dest=f.name, default=None, help=helptext.replace("%", "%%"))
        if md.get("action") in ("store_true", "store_false"):
            kw["action"] = md["action"]
        else:
            kw["type"] = _flag_type(tp, names[0])
            kw["metavar"] = md.get("metavar") or ("BOOL" if tp is bool else f.name.upper())
        parser.add_argument(*names, **kw)
        added.append(f.name)
    return added


def given(args: argparse.Namespace, names) -> dict[str, Any]:
    """The flags among ``names`` that were actually given (not None)."""
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors naming the flag, exit status 2 (as every user mistake)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")
