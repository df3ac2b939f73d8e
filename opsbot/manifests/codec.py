"""Frozen config dataclasses to and from JSON-able data, driven by their type hints.

Why by type hints: the cached repo config must come back as exactly the objects `load_config`
returns (tuples stay tuples, nested dataclasses stay dataclasses) while the config's fields keep
growing; a hand-written mapping would silently drop a new field. Anything the hints do not
describe raises `CodecError`, and the caller then treats the cache row as absent.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Mapping
from typing import Any


class CodecError(Exception):
    """The value does not match the dataclass's declared types."""


def encode(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise CodecError(f"cannot encode {type(value).__name__}")


@functools.lru_cache(maxsize=64)
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def decode(cls: Any, data: Any) -> Any:
    """`data` (from `encode`) as an instance of the type `cls`."""
    origin = typing.get_origin(cls)
    args = typing.get_args(cls)
    if origin in (typing.Union, types.UnionType):
        if data is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return decode(arg, data)
            except CodecError:
                continue
        raise CodecError(f"no member of {cls} fits")
    if isinstance(cls, type) and dataclasses.is_dataclass(cls):
        if not isinstance(data, dict):
            raise CodecError(f"{cls.__name__}: expected an object")
        hints = _hints(cls)
        fields = {f.name for f in dataclasses.fields(cls)}
        if set(data) - fields:
            raise CodecError(f"{cls.__name__}: unknown fields")
        try:
            return cls(**{name: decode(hints[name], v) for name, v in data.items()})
        except TypeError as exc:
            raise CodecError(str(exc)) from None
    if origin in (Mapping, dict, typing.Mapping) or cls in (dict,):
        if not isinstance(data, dict):
            raise CodecError("expected an object")
        vtype = args[1] if len(args) == 2 else Any
        return {k: decode(vtype, v) for k, v in data.items()}
    if origin is tuple:
        if not isinstance(data, list):
            raise CodecError("expected a list")
        if len(args) == 2 and args[1] is Ellipsis:
            if args[0] is str:  # env paths: thousands on a large fleet, so checked in one pass
                if not all(type(v) is str for v in data):
                    raise CodecError("expected strings")
                return tuple(data)
            return tuple(decode(args[0], v) for v in data)
        if len(args) != len(data):
            raise CodecError("tuple length")
        return tuple(decode(a, v) for a, v in zip(args, data, strict=True))
    if origin is list:
        if not isinstance(data, list):
            raise CodecError("expected a list")
        return [decode(args[0] if args else Any, v) for v in data]
    if cls is Any:
        return data
    if cls is float and type(data) in (int, float):
        return float(data)
    if cls in (str, int, bool, float):
        if type(data) is not cls:
            raise CodecError(f"expected {cls.__name__}")
        return data
    if cls is type(None):
        if data is not None:
            raise CodecError("expected null")
        return None
    raise CodecError(f"unsupported type {cls!r}")
