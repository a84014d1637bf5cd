"""Decode plain TOML data into frozen dataclasses, collecting *every* problem with its path.

Theory of operation
-------------------
The config schema *is* the dataclasses in :mod:`gateway.config.model` (and the source configs
in :mod:`discovery.sources.config`).  This module walks a dataclass's type hints and the TOML
value side by side:

* ``bool``/``int``/``float``/``str`` are checked exactly (``true`` is not an int; an int is
  accepted for a float); ``Literal[...]`` must be one of the listed values;
* ``tuple[X, ...]`` takes a TOML array; ``Mapping[str, X]`` a table; ``X | None`` allows absence;
  a union of scalars (``int | Literal["auto"]``) takes the first arm that accepts the value;
* a class with a ``parse(str)`` classmethod (SPIFFE IDs, trust domains) or ``ipaddress`` types
  take a string and turn the parser's error into a problem;
* ``pathlib.Path`` is resolved relative to the config file's directory;
* a union of dataclasses is discriminated by their ``kind: Literal[...]`` field;
* dataclass fields may carry ``metadata={"min": .., "max": .., "check": fn, "unique": key}``
  (``unique``: no two tables of the array share ``key``), and a dataclass
  may define ``problems(self) -> list[tuple[str, str]]`` for cross-field rules (duplicate
  names), returning paths relative to itself.

Unknown keys are errors (a typo must never silently fall back to a default).  Decoding never
stops at the first problem; the caller raises one :class:`ConfigInvalid` with all of them.
That includes cross-field rules: when some field of a dataclass fails, ``problems()`` still
runs on a partly decoded instance (failed values stand in as :data:`UNKNOWN`, which makes a
rule that needs them skip itself), so fixing one problem never reveals another in the next run.
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

from gateway.config.errors import UnknownValue

T = TypeVar("T")

_MISSING = object()


@functools.lru_cache(maxsize=512)
def _type_hints(cls: Any) -> dict[str, Any]:
    """``typing.get_type_hints``, once per class: evaluating the annotations was most of the
    cost of decoding a route (a peer's thousand imported routes are decoded one by one)."""
    return typing.get_type_hints(cls)


def _any(value: object) -> Any:
    return value


class _Unknown:
    """Stands in for a value that failed to decode, in a partly decoded object.

    Any use except ``repr`` and identity raises :class:`UnknownValue`: a cross-field check
    that needs the value is skipped (the value's own problem is already reported).
    """

    __slots__ = ()

    def _poison(self, *args: Any, **kwargs: Any) -> Any:
        raise UnknownValue()

    __eq__ = __ne__ = __lt__ = __le__ = __gt__ = __ge__ = _poison
    __hash__ = __bool__ = __len__ = __iter__ = __contains__ = _poison
    __str__ = __format__ = __getattr__ = __getitem__ = __int__ = __float__ = _poison

    def __repr__(self) -> str:
        return "<undecoded>"


UNKNOWN: Any = _Unknown()


class _Fail(Exception):
    """Internal: this value could not be decoded (the problem is already recorded).

    ``partial`` is what could be decoded: a tuple with :data:`UNKNOWN` for the items that
    failed, a dataclass instance with :data:`UNKNOWN` for its fields that failed (built
    without ``__init__``), or :data:`UNKNOWN`.  Cross-field checks run on it.
    """

    def __init__(self, partial: Any = None) -> None:
        super().__init__()
        self.partial = UNKNOWN if partial is None else partial


class Decoder:
    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir
        self.problems: list[tuple[str, str]] = []
        #: After a failed :meth:`decode_root`: the partly decoded root (see :class:`_Fail`).
        self.partial: Any = UNKNOWN

    def problem(self, path: str, message: str) -> _Fail:
        self.problems.append((path, message))
        return _Fail()

    def decode_root(self, cls: type[T], data: Any) -> T | None:
        try:
            return typing.cast(T, self.decode(cls, data, ""))
        except _Fail as fail:
            self.partial = fail.partial
            return None

    # -- dispatch -------------------------------------------------------------------------
    def decode(self, tp: Any, value: Any, path: str) -> Any:
        origin = get_origin(tp)
        if origin in (Union, types.UnionType):
            return self._union(tp, value, path)
        if origin is Literal:
            allowed = get_args(tp)
            if value not in allowed or type(value) is not type(allowed[0]):
                raise self.problem(
                    path, f"must be one of {', '.join(repr(a) for a in allowed)}, not {value!r}"
                )
            return value
        if origin is tuple:
            return self._tuple(tp, value, path)
        if origin in (Mapping, dict, typing.Mapping):
            return self._mapping(tp, value, path)
        if callable(getattr(tp, "parse", None)):
            return self._parsed(tp, value, path)
        if dataclasses.is_dataclass(tp) and isinstance(tp, type):
            return self._dataclass(tp, value, path)
        if tp is bool:
            if not isinstance(value, bool):
                raise self.problem(path, f"must be a boolean, not {_tname(value)}")
            return value
        if tp is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise self.problem(path, f"must be an integer, not {_tname(value)}")
            return value
        if tp is float:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise self.problem(path, f"must be a number, not {_tname(value)}")
            return float(value)
        if tp is str:
            if not isinstance(value, str):
                raise self.problem(path, f"must be a string, not {_tname(value)}")
            return value
        if tp is Path:
            if not isinstance(value, str) or not value:
                raise self.problem(path, f"must be a non-empty path string, not {_tname(value)}")
            p = Path(value).expanduser()
            return p if p.is_absolute() else (self.base_dir / p)
        if tp in (ipaddress.IPv4Address, ipaddress.IPv6Address):
            return self._ip(tp, value, path)
        raise TypeError(f"config schema uses an unsupported type {tp!r} at {path!r}")

    # -- containers -----------------------------------------------------------------------
    def _union(self, tp: Any, value: Any, path: str) -> Any:
        args = [a for a in get_args(tp) if a is not type(None)]
        if value is None:
            return None
        if len(args) == 1:
            return self.decode(args[0], value, path)
        if all(dataclasses.is_dataclass(a) and "kind" in _type_hints(_any(a)) for a in args):
            return self._tagged(args, value, path)
        if set(args) == {ipaddress.IPv4Address, ipaddress.IPv6Address}:
            return self._ip(None, value, path)
        if all(_scalar(a) for a in args):
            return self._scalar_union(args, value, path)
        raise TypeError(f"config schema uses an unsupported union {tp!r} at {path!r}")

    def _scalar_union(self, args: list[Any], value: Any, path: str) -> Any:
        """The first arm that takes ``value`` (``workers = "auto" | 4``); one problem naming
        every arm when none does, never one per arm."""
        for arm in args:
            mark = len(self.problems)
            try:
                return self.decode(arm, value, path)
            except _Fail:
                del self.problems[mark:]
        wanted = " or ".join(_describe(arm) for arm in args)
        raise self.problem(path, f"must be {wanted}, not {value!r}")

    def _parsed(self, tp: Any, value: Any, path: str) -> Any:
        if not isinstance(value, str):
            raise self.problem(path, f"must be a string, not {_tname(value)}")
        try:
            return tp.parse(value)
        except ValueError as exc:
            raise self.problem(path, str(exc)) from None

    def _ip(self, tp: Any, value: Any, path: str) -> Any:
        if not isinstance(value, str):
            raise self.problem(path, f"must be an IP address string, not {_tname(value)}")
        try:
            addr = ipaddress.ip_address(value)
        except ValueError:
            raise self.problem(path, f"{value!r} is not a valid IP address") from None
        if tp is not None and not isinstance(addr, tp):
            raise self.problem(path, f"{value!r} must be an {tp.__name__}")
        return addr

    def _tagged(self, classes: list[Any], value: Any, path: str) -> Any:
        if not isinstance(value, dict):
            raise self.problem(path, f"must be a table, not {_tname(value)}")
        by_kind: dict[str, Any] = {}
        for cls in classes:
            kind_tp = _type_hints(cls)["kind"]
            for k in get_args(kind_tp):
                by_kind[k] = cls
        kind = value.get("kind", _MISSING)
        if kind is _MISSING:
            raise self.problem(
                _join(path, "kind"), f"is required (one of {', '.join(map(repr, by_kind))})"
            )
        if kind not in by_kind:
            raise self.problem(
                _join(path, "kind"),
                f"must be one of {', '.join(map(repr, by_kind))}, not {kind!r}",
            )
        return self._dataclass(by_kind[kind], value, path)

    def _tuple(self, tp: Any, value: Any, path: str) -> tuple[Any, ...]:
        args = get_args(tp)
        if not isinstance(value, list):
            raise self.problem(path, f"must be an array, not {_tname(value)}")
        item_tp = args[0]
        out: list[Any] = []
        failed = False
        for i, item in enumerate(value):
            try:
                out.append(self.decode(item_tp, item, f"{path}[{i}]"))
            except _Fail as fail:
                out.append(fail.partial)
                failed = True
        if failed:
            raise _Fail(tuple(out))
        return tuple(out)

    def _mapping(self, tp: Any, value: Any, path: str) -> Mapping[Any, Any]:
        key_tp, val_tp = get_args(tp)
        if not isinstance(value, dict):
            raise self.problem(path, f"must be a table, not {_tname(value)}")
        out: dict[Any, Any] = {}
        failed = False
        for k, v in value.items():
            sub = _join(path, k)
            try:
                key = self.decode(key_tp, k, sub) if key_tp is not str else k
                out[key] = self.decode(val_tp, v, sub)
            except _Fail:
                failed = True
        if failed:
            raise _Fail()
        return types.MappingProxyType(out)

    def _dataclass(self, cls: Any, value: Any, path: str) -> Any:
        if not isinstance(value, dict):
            raise self.problem(path, f"must be a table, not {_tname(value)}")
        hints = _type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
        failed = False
        for key in value:
            if key not in fields:
                self.problem(_join(path, key), _unknown_key(key, fields))
                failed = True
        kwargs: dict[str, Any] = {}
        partials: dict[str, Any] = {}
        for name, field in fields.items():
            sub = _join(path, name)
            if name not in value:
                if (
                    field.default is dataclasses.MISSING
                    and field.default_factory is dataclasses.MISSING
                ):
                    self.problem(sub, "is required")
                    failed = True
                continue
            unique = field.metadata.get("unique")
            if unique and isinstance(value[name], list):
                failed |= self._check_unique(value[name], unique, sub)
            try:
                decoded = self.decode(hints[name], value[name], sub)
            except _Fail as fail:
                partials[name] = fail.partial
                failed = True
                continue
            try:
                self._check_field(field, decoded, sub)
                kwargs[name] = decoded
            except _Fail:
                failed = True
        if failed:
            # Cross-field rules still run, on what did decode: reported in this same run.
            partial = _partial(cls, fields, set(value), kwargs, partials)
            self._cross_checks(partial, path, partial=True)
            raise _Fail(partial)
        try:
            obj = cls(**kwargs)
        except ValueError as exc:
            raise self.problem(path, str(exc)) from None
        if self._cross_checks(obj, path, partial=False):
            raise _Fail(obj)
        return obj

    def _cross_checks(self, obj: Any, path: str, *, partial: bool) -> bool:
        """Record ``obj.problems()`` (if it has that method); True if there were any.

        On a partly decoded object a check that touches an undecoded value raises
        :class:`UnknownValue` and is skipped; so is any other error such an object may cause
        in a check written for whole values (the problems already found are reported; a
        check must never turn a bad config into a crash).
        """
        check = getattr(type(obj), "problems", None)
        if not callable(check):
            return False
        try:
            found = list(check(obj))
        except UnknownValue:
            return False
        except Exception:
            if not partial:
                raise
            return False
        for rel, message in found:
            self.problem(_join(path, rel) if rel else path, message)
        return bool(found)

    def _check_unique(self, items: list[Any], key: str, path: str) -> bool:
        """Report items of an array of tables that repeat ``key`` (checked on the raw data, so
        a duplicate is reported even when another item fails to decode)."""
        seen: set[Any] = set()
        found = False
        for i, item in enumerate(items):
            if isinstance(item, dict) and key in item:
                marker = repr(item[key])
                if marker in seen:
                    self.problem(f"{path}[{i}].{key}", f"duplicate {key} {item[key]!r}")
                    found = True
                seen.add(marker)
        return found

    def _check_field(self, field: dataclasses.Field[Any], value: Any, path: str) -> None:
        meta = field.metadata
        lo, hi = meta.get("min"), meta.get("max")
        if lo is not None and isinstance(value, int | float) and value < lo:
            raise self.problem(path, f"must be >= {lo}, not {value}")
        if hi is not None and isinstance(value, int | float) and value > hi:
            raise self.problem(path, f"must be <= {hi}, not {value}")
        check: Callable[[Any], str | None] | None = meta.get("check")
        if check is not None:
            message = check(value)
            if message:
                raise self.problem(path, message)


def _partial(
    cls: Any,
    fields: Mapping[str, Any],
    present: set[str],
    decoded: Mapping[str, Any],
    partials: Mapping[str, Any],
) -> Any:
    """An instance of ``cls`` built without ``__init__``: decoded fields as decoded, failed
    ones as their partial value (or :data:`UNKNOWN`), absent ones as their default."""
    obj = object.__new__(cls)
    for name, field in fields.items():
        if name in decoded:
            value = decoded[name]
        elif name in partials:
            value = partials[name]
        elif name in present:
            value = UNKNOWN  # decoded, but out of range or failing its check
        elif field.default is not dataclasses.MISSING:
            value = field.default
        elif field.default_factory is not dataclasses.MISSING:
            value = field.default_factory()
        else:
            value = UNKNOWN
        object.__setattr__(obj, name, value)
    return obj


_SCALARS: dict[Any, str] = {
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    str: "a string",
}


def _scalar(tp: Any) -> bool:
    return tp in _SCALARS or get_origin(tp) is Literal


def _describe(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return " or ".join(repr(a) for a in get_args(tp))
    return _SCALARS[tp]


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _tname(value: Any) -> str:
    names = {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "a table",
    }
    return names.get(type(value), type(value).__name__)


def _unknown_key(key: str, fields: Mapping[str, Any]) -> str:
    import difflib

    close = difflib.get_close_matches(key, list(fields), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown key{hint}; allowed: {', '.join(sorted(fields))}"
