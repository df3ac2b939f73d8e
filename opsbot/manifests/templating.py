"""Cluster templates: clusterctl/envsubst placeholders filled with values people type in chat.

Why more than a string replace: a value lands inside YAML, so `{"evil":true}` would become a
mapping, `*x` an alias, `a"b` a broken file and `a\\b` (inside double quotes) a backspace. Values
must be scalars: YAML syntax at the start is refused; each value is escaped for the place it lands
(double-quoted, single-quoted, plain); and then the result is *proven*: the template is rendered a
second time with inert stand-ins, both are parsed, and every scalar must read back as exactly the
text typed (or, where the template expects a number or boolean, as that number or boolean). Anything
else is a refusal, never a file that says something other than what was asked.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import yaml

from opsbot.core.model import Check
from opsbot.errors import CommandError
from opsbot.manifests.safeyaml import load_all
from opsbot.manifests.yamledit import render_scalar

#: What the API server accepts (apimachinery validation): namespaces are DNS-1123 labels, most names
#: DNS-1123 subdomains. The OpenAPI schemas do not say so, so the schema check alone passes `a"b`.
_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_DNS1123_SUBDOMAIN = re.compile(r"(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::=([^}]*))?\}")
#: YAML indicators that make a value something other than a plain word: flow collections, block
#: scalars, tags, anchors, aliases, directives, reserved characters.
_INDICATORS = ("{", "[", "|", ">", "!", "&", "*", "%", "@", "`")


class TemplateValueError(CommandError):
    """A template value that is not a plain scalar, or does not read back as typed."""


def check_value(var: str, value: str) -> None:
    if value.startswith(_INDICATORS) or value in ("-", "?", ":", "~"):
        raise TemplateValueError(
            f"{var.lower()}={value} is not a plain value: template values are words, names or numbers, not YAML "
            "syntax (no {…} or […], |, >, !tags, &anchors or *aliases)."
        )
    for c in value:
        if ord(c) < 32 or ord(c) == 127 or c in "\u2028\u2029\ufeff":
            raise TemplateValueError(f"{var.lower()}= contains a control character (U+{ord(c):04X}).")


def substitute(text: str, variables: Mapping[str, str]) -> tuple[str, set[str], set[str]]:
    """clusterctl/drone-envsubst subset: ${VAR} and ${VAR:=default}; returns (text, missing, used)."""
    return _render(text, variables, typed=True)


def _render(text: str, variables: Mapping[str, str], *, typed: bool) -> tuple[str, set[str], set[str]]:
    missing: set[str] = set()
    used: set[str] = set()

    def repl(m: re.Match[str]) -> str:
        var, default = m.group(1), m.group(2)
        used.add(var)
        if var not in variables:
            if default is not None:
                return default
            missing.add(var)
            return m.group(0)
        value = variables[var]
        where = _context(text, m)
        if where == "double":
            return json.dumps(value, ensure_ascii=False)[1:-1]
        if where == "single":
            return value.replace("'", "''")
        if where != "whole" or not typed:
            return value
        want = _yaml_type(default) if default is not None else "text"
        got = _yaml_type(value)
        if got != want:
            if default is not None:
                raise TemplateValueError(
                    f"{var.lower()}={value} would be read by YAML as {got}, but the template "
                    f"expects {want} (default {default})."
                )
            raise TemplateValueError(
                f"{var.lower()}={value} would be read by YAML as {got}, not text; the template "
                "would change its type. Quote the placeholder in the template or pick another value."
            )
        return render_scalar(value) if want == "text" else value

    return _VAR.sub(repl, text), missing, used


def prove(path: str, text: str, rendered: str, variables: Mapping[str, str]) -> None:
    """Refuse unless every value in `rendered` reads back as exactly what was typed, in its place."""
    if not path.endswith((".yaml", ".yml")):
        return
    stand_ins = {k: f"opsbotvalue{i}x" for i, k in enumerate(sorted(variables))}
    inert, _, _ = _render(text, stand_ins, typed=False)
    by_stand_in = {stand_ins[k]: variables[k] for k in variables}
    try:
        real_docs = load_all(rendered, path)
        inert_docs = load_all(inert, path)
    except yaml.YAMLError as exc:
        raise TemplateValueError(
            f"The values make {path} invalid YAML ({getattr(exc, 'problem', exc)}); nothing was written."
        ) from None
    if len(real_docs) != len(inert_docs) or not all(
        _same(a, b, by_stand_in) for a, b in zip(inert_docs, real_docs, strict=True)
    ):
        raise TemplateValueError(
            f"The values would change the structure of {path} (a value must stay one scalar); nothing was written."
        )


def _same(inert: Any, real: Any, values: Mapping[str, str]) -> bool:
    if isinstance(inert, dict):
        if not isinstance(real, dict) or len(inert) != len(real):
            return False
        for k, v in inert.items():
            rk = _fill(k, values) if isinstance(k, str) else k
            if rk not in real or not _same(v, real[rk], values):
                return False
        return True
    if isinstance(inert, list):
        return isinstance(real, list) and len(inert) == len(real) and all(
            _same(a, b, values) for a, b in zip(inert, real, strict=True)
        )
    if isinstance(inert, str) and any(s in inert for s in values):
        if isinstance(real, str):
            return real == _fill(inert, values)
        if inert in values and isinstance(real, (int, float, bool)) and not isinstance(real, dict):
            typed = yaml.safe_load(values[inert])
            return type(typed) is type(real) and typed == real
        return False
    return type(inert) is type(real) and inert == real


def _fill(text: str, values: Mapping[str, str]) -> str:
    for stand_in, value in values.items():
        text = text.replace(stand_in, value)
    return text


def _context(text: str, m: re.Match[str]) -> str:
    """Where the placeholder sits: "comment", "double"/"single" (inside quotes), "whole" (the entire
    plain value of `key: ${VAR}` or `- ${VAR}`) or "plain" (part of a plain value)."""
    line_start = text.rfind("\n", 0, m.start()) + 1
    line_end = text.find("\n", m.end())
    before = text[line_start : m.start()]
    after = text[m.end() : len(text) if line_end < 0 else line_end]
    if before.lstrip().startswith("#"):
        return "comment"
    value_start = _value_start(before)
    lead = before[value_start:]
    if lead.startswith('"') and _unescaped_quotes(lead) % 2 == 1:
        return "double"
    if lead.startswith("'") and lead.count("'") % 2 == 1:
        return "single"
    stripped_after = after.split(" #", 1)[0].strip()
    if not lead.strip() and not stripped_after:
        return "whole"
    return "plain"


def _value_start(before: str) -> int:
    """Index in `before` where the scalar starts (after `key: ` and/or `- ` markers)."""
    i = 0
    while True:
        m = re.match(r"\s*-\s+", before[i:])
        if m and m.end() > 0:
            i += m.end()
            continue
        m = re.match(r"\s*[^\s\"'#][^:#]*:\s+", before[i:])
        if m:
            i += m.end()
            continue
        return i + (len(before[i:]) - len(before[i:].lstrip()))


def _unescaped_quotes(s: str) -> int:
    n, i = 0, 0
    while i < len(s):
        if s[i] == "\\":
            i += 2
            continue
        if s[i] == '"':
            n += 1
        i += 1
    return n


def _yaml_type(value: str) -> str:
    try:
        v = yaml.safe_load(value)
    except yaml.YAMLError:
        return "text"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, int):
        return "a number"
    if isinstance(v, float):
        return "a decimal number"
    if v is None:
        return "null"
    if isinstance(v, (dict, list)):
        return "a structure"
    return "text"


def check_object_names(objects: list[dict[str, Any]]) -> Check:
    """Names and namespaces of rendered template objects, checked as the API server checks them."""
    for obj in objects:
        raw_meta = obj.get("metadata")
        meta: dict[str, Any] = raw_meta if isinstance(raw_meta, dict) else {}
        what = f"{obj.get('kind', 'object')} {meta.get('name', '?')}"
        ns = meta.get("namespace")
        if ns is not None and not (isinstance(ns, str) and _DNS1123_LABEL.fullmatch(ns)):
            return Check("names", False, f"{what}: namespace {ns!r} is not a DNS-1123 label")
        name = meta.get("name")
        if name is not None and not (isinstance(name, str) and _DNS1123_SUBDOMAIN.fullmatch(name)):
            return Check("names", False, f"{what}: name {name!r} is not a DNS-1123 subdomain")
    return Check("names", True, f"{len(objects)} object(s)")
