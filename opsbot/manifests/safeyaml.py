"""YAML from the repo, parsed with bounds: size, alias expansion, nesting.

Why: PyYAML builds an alias as a shared reference, so 871 bytes of nested `&a`/`*a` load quickly
into a graph that expands to billions of nodes the moment anything walks it (`str()`, a JSON cache,
a schema check). The bound is checked on the parser's event stream *before* any tree is built, from
the anchors' expanded sizes, so nothing ever walks a bomb. Texts without `&` cannot hold an alias and
skip the event pass (libyaml already refuses flow nesting deeper than 1000).
"""

from __future__ import annotations

from typing import Any, NoReturn

import yaml

from opsbot.errors import ConfigError

try:  # libyaml's parser is ~10x faster; fall back to pure Python where it is missing
    _Loader: Any = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - depends on the wheel
    _Loader = yaml.SafeLoader

#: Largest repo file opsbot parses (bundled CRD files run to a few MB).
MAX_FILE_BYTES = 8 * 1024 * 1024
#: Largest `.opsbot.yaml` (a real one is a few KB).
MAX_CONFIG_BYTES = 256 * 1024
#: How many nodes aliases may add on top of the text's own (YAML merge keys of a few anchors stay far
#: below; a bomb goes past it within a few levels).
MAX_ALIAS_NODES = 10_000
MAX_DEPTH = 200


class UnsafeYAML(ConfigError):
    """A repo file opsbot will not parse: too large, an alias bomb, aliases where none are allowed."""


def check_size(text: str, where: str, limit: int = MAX_FILE_BYTES) -> None:
    size = len(text.encode("utf-8", errors="replace")) if len(text) * 4 > limit else len(text)
    if size > limit:
        refuse_size(where, size, limit)


def refuse_size(where: str, size: int, limit: int) -> NoReturn:
    raise UnsafeYAML(
        f"{where} is {size:,} bytes; opsbot reads files of at most {limit:,} bytes. "
        "Split it, or keep it out of the paths opsbot reads."
    )


def check_aliases(text: str, where: str, *, allow: bool = True, limit: int = MAX_ALIAS_NODES) -> None:
    """Refuse aliases (allow=False) or an expansion above `limit` extra nodes, from events only."""
    if "&" not in text:
        return
    sizes: dict[str, int] = {}
    stack: list[tuple[str | None, int]] = []  # (anchor, expanded nodes so far) per open collection
    extra = 0
    try:
        for ev in yaml.parse(text, Loader=_Loader):
            if isinstance(ev, yaml.AliasEvent):
                if not allow:
                    raise UnsafeYAML(
                        f"{where}: uses the YAML alias *{ev.anchor}; aliases are not allowed here. "
                        "Write the value out."
                    )
                n = sizes.get(str(ev.anchor), 1)
                extra += n
                if extra > limit:
                    raise UnsafeYAML(
                        f"{where}: YAML aliases expand to more than {limit:,} extra nodes "
                        f"(an alias bomb?); opsbot will not read it."
                    )
                _add(stack, n)
            elif isinstance(ev, yaml.ScalarEvent):
                if ev.anchor is not None:
                    sizes[str(ev.anchor)] = 1
                _add(stack, 1)
            elif isinstance(ev, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                if len(stack) >= MAX_DEPTH:
                    raise UnsafeYAML(f"{where}: nested deeper than {MAX_DEPTH} levels; opsbot will not read it.")
                stack.append((ev.anchor, 1))
            elif isinstance(ev, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                anchor, n = stack.pop()
                if anchor is not None:
                    sizes[str(anchor)] = n
                _add(stack, n)
    except yaml.YAMLError:
        return  # not YAML at all: the caller's own parse reports it as usual


def _add(stack: list[tuple[str | None, int]], n: int) -> None:
    if stack:
        anchor, count = stack[-1]
        stack[-1] = (anchor, count + n)


def load_all(text: str, where: str = "a YAML text") -> list[Any]:
    """Every document, as Kubernetes (YAML 1.1) reads it, after the alias bound."""
    check_aliases(text, where)
    return list(yaml.load_all(text, Loader=_Loader))


def load_file(text: str, path: str) -> list[Any]:
    """A repo file's documents: size cap, then alias bound, then parse."""
    check_size(text, path)
    return load_all(text, path)


def load_config(text: str, name: str) -> Any:
    """A config file (one document): small, and no aliases at all."""
    check_size(text, name, MAX_CONFIG_BYTES)
    check_aliases(text, name, allow=False)
    return yaml.load(text, Loader=_Loader)
