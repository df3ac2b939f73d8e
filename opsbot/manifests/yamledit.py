"""Surgical YAML edits: text in, text out, only the meant bytes change.

Why not a round-trip dump: every YAML library re-flows something (quotes, comments before `---`,
`...` markers, mixed indentation; see reference/feasibility.md §4). So nodes are *located* with
ruamel's composer (which knows character offsets), the new value is *spliced* into the original
text, and the result is *re-read* with PyYAML (YAML 1.1, as Kubernetes reads it) to prove the value
and its type came out as meant. Inserting a missing key or list item adds lines and changes nothing
else.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml
from ruamel.yaml import YAML
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from opsbot.errors import CommandError
from opsbot.manifests import safeyaml


class EditError(CommandError):
    """The file cannot be edited as asked without touching more than the meant value."""


@dataclass(frozen=True)
class Sel:
    """A path step into a list of mappings: the item whose `key` equals `value` (e.g. name=api)."""

    key: str
    value: str

    def __str__(self) -> str:
        return f"[{self.key}={self.value}]"


PathStep = str | int | Sel
YPath = Sequence[PathStep]


def path_str(path: YPath) -> str:
    out = ""
    for step in path:
        if isinstance(step, int):
            out += f"[{step}]"
        elif isinstance(step, Sel):
            out += str(step)
        else:
            out += ("." if out else "") + step
    return out


try:  # libyaml's loader is ~10x faster; fall back to pure Python where it is missing
    _Loader: Any = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - depends on the wheel
    _Loader = yaml.SafeLoader


def load_all(text: str, where: str = "a YAML text") -> list[Any]:
    """Every document, as Kubernetes (YAML 1.1) would read it; alias bombs refused before loading."""
    return safeyaml.load_all(text, where)


def compose_all(text: str) -> list[Node | None]:
    y = YAML(typ="rt", pure=True)
    try:
        return list(y.compose_all(text))
    except Exception as exc:  # ruamel raises many error types
        raise EditError(f"not valid YAML: {exc}") from None


# ----------------------------------------------------------------------------------------- locating


def _child(node: Node, step: PathStep) -> Node | None:
    if isinstance(node, MappingNode) and isinstance(step, str):
        for k, v in node.value:
            if isinstance(k, ScalarNode) and k.value == step:
                return v
        return None
    if isinstance(node, SequenceNode):
        if isinstance(step, int):
            return node.value[step] if -len(node.value) <= step < len(node.value) else None
        if isinstance(step, Sel):
            for item in node.value:
                if isinstance(item, MappingNode):
                    for k, v in item.value:
                        if (
                            isinstance(k, ScalarNode)
                            and k.value == step.key
                            and getattr(v, "value", None) == step.value
                        ):
                            return item
            return None
    return None


def find(node: Node | None, path: YPath) -> Node | None:
    for step in path:
        if node is None:
            return None
        node = _child(node, step)
    return node


def _doc_node(text: str, doc: int) -> Node:
    docs = compose_all(text)
    if doc >= len(docs) or docs[doc] is None:
        raise EditError(f"document {doc} is empty or missing")
    node = docs[doc]
    assert node is not None
    return node


# ----------------------------------------------------------------------------------------- rendering


def _reads_back(text: str, value: Any) -> bool:
    try:
        got = yaml.load(f"k: {text}\n", Loader=_Loader)["k"]
    except yaml.YAMLError:
        return False
    return bool(got == value and type(got) is type(value))


# Numbers as YAML 1.2 / go-yaml read them (PyYAML's 1.1 rules miss `1e3`): such text gets quotes.
_YAML12_NUMBER = re.compile(
    r"^[-+]?(\.[0-9]+|[0-9][0-9_]*(\.[0-9_]*)?)([eE][-+]?[0-9]+)?$|^0x[0-9a-fA-F_]+$|^0o[0-7_]+$"
    r"|^[-+]?\.(inf|Inf|INF)$|^\.(nan|NaN|NAN)$"
)


def render_scalar(value: Any, style: str | None = None) -> str:
    """Text for `value` that YAML 1.1 reads back as the same value and type, in `style` if possible."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    s = str(value)
    if style == "'":
        return "'" + s.replace("'", "''") + "'"
    if style == '"':
        return json.dumps(s, ensure_ascii=False)
    if (
        _reads_back(s, s)
        and not _YAML12_NUMBER.match(s)
        and "#" not in s
        and not s.startswith(("&", "*", "!", "%", "@", "`"))
    ):
        return s
    return json.dumps(s, ensure_ascii=False)


# ----------------------------------------------------------------------------------------- verifying


def _get(data: Any, path: YPath) -> Any:
    for step in path:
        if isinstance(step, Sel):
            data = (
                next((i for i in data if isinstance(i, dict) and str(i.get(step.key)) == step.value), None)
                if isinstance(data, list)
                else None
            )
        elif isinstance(data, dict):
            data = data.get(step)
        elif isinstance(data, list) and isinstance(step, int):
            data = data[step] if -len(data) <= step < len(data) else None
        else:
            return None
        if data is None:
            return None
    return data


def read_value(text: str, doc: int, path: YPath) -> Any:
    docs = load_all(text)
    return _get(docs[doc], path) if doc < len(docs) else None


def _verify(before: str, after: str, doc: int, path: YPath, value: Any) -> None:
    try:
        docs = load_all(after)
    except yaml.YAMLError as exc:
        raise EditError(f"the edit would break the YAML at {path_str(path)}: {exc}") from None
    got = _get(docs[doc], path) if doc < len(docs) else None
    if got != value or type(got) is not type(value):
        raise EditError(
            f"{path_str(path)} would read back as {got!r} ({type(got).__name__}), not {value!r}; "
            "quote the value in the file or choose another"
        )
    old_docs = load_all(before)
    if len(old_docs) != len(docs):
        raise EditError("the edit would change the number of YAML documents")


# ----------------------------------------------------------------------------------------- editing


def _line_start(text: str, index: int) -> int:
    return text.rfind("\n", 0, index) + 1


def _line_end(text: str, index: int) -> int:
    end = text.find("\n", index)
    return len(text) if end < 0 else end + 1


def _last_scalar(node: Node) -> Node:
    while isinstance(node, MappingNode | SequenceNode) and node.value:
        last = node.value[-1]
        node = last[1] if isinstance(node, MappingNode) else last
    return node


def _end_of_node(text: str, node: Node) -> int:
    """Index just past the last line of `node` (where a sibling line may be inserted)."""
    last = _last_scalar(node)
    if isinstance(last, ScalarNode) and last.style in ("|", ">"):
        # A block scalar ends at the start of the line after its content; step back over blank lines.
        idx = last.end_mark.index
        while idx > 0 and text[idx - 1] == "\n" and idx - 2 >= 0 and text[idx - 2] == "\n":
            idx -= 1
        return idx if idx == len(text) or text[idx - 1] == "\n" else _line_end(text, idx)
    if isinstance(last, MappingNode | SequenceNode) and last.flow_style is False and not last.value:
        return _line_end(text, last.start_mark.index)
    end = last.end_mark.index
    # end_mark of a quoted/plain scalar sits right after it; the line may carry a comment.
    return _line_end(text, max(end - 1, last.start_mark.index))


def _seq_style(text: str) -> int:
    """Offset of `- ` under its parent key in this file (0 = kubectl style, 2 = offset style)."""
    lines = text.splitlines()
    for i, line in enumerate(lines[:-1]):
        s = line.rstrip()
        if s.endswith(":") and not s.lstrip().startswith(("#", "- ")):
            nxt = lines[i + 1]
            if nxt.lstrip().startswith("- "):
                return (len(nxt) - len(nxt.lstrip())) - (len(s) - len(s.lstrip()))
    return 0


def _mapping_indent(text: str, node: MappingNode, parent_col: int) -> int:
    if node.value:
        return int(node.value[0][0].start_mark.column)
    return parent_col + 2


def render_block(value: Any, indent: int, seq_offset: int) -> list[str]:
    """Lines for a new mapping/list value at `indent`, in the file's sequence style."""
    pad = " " * indent
    lines: list[str] = []
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(v, dict | list) and v:
                lines.append(f"{pad}{k}:")
                child = indent + (seq_offset if isinstance(v, list) else 2)
                lines.extend(render_block(v, child, seq_offset))
            else:
                lines.append(
                    f"{pad}{k}: {render_scalar(v) if not isinstance(v, dict | list) else json.dumps(v)}"
                )
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, dict) and item:
                sub = render_block(item, indent + 2, seq_offset)
                sub[0] = pad + "- " + sub[0][indent + 2 :]
                lines.extend(sub)
            else:
                lines.append(f"{pad}- {render_scalar(item)}")
    return lines


def set_value(text: str, doc: int, path: YPath, value: Any) -> str:
    """Set `path` in document `doc` to `value`, inserting missing keys; verified by re-reading."""
    root = _doc_node(text, doc)
    node: Node = root
    parent_col = -2
    for i, step in enumerate(path):
        child = _child(node, step)
        if child is None:
            return _insert(text, doc, path, i, node, parent_col, value)
        if isinstance(node, MappingNode):
            parent_col = _mapping_indent(text, node, parent_col)
        node = child
    if not isinstance(node, ScalarNode):
        raise EditError(
            f"{path_str(path)} is a {type(node).__name__.replace('Node', '').lower()}, not a single value"
        )
    if node.style in ("|", ">"):
        raise EditError(f"{path_str(path)} is a block scalar; opsbot edits single-line values only")
    tag = str(getattr(node.tag, "value", node.tag) or "")
    if tag.startswith("!") and not tag.startswith("!!"):
        raise EditError(f"{path_str(path)} carries a custom tag {tag}")
    if node.style in ("'", '"') and not isinstance(value, str):
        raise EditError(
            f"{path_str(path)} is written as text ({text[node.start_mark.index : node.end_mark.index]}) but "
            f"{value!r} is a {type(value).__name__}; opsbot will not change its type. Fix the file first."
        )
    new_text = render_scalar(value, node.style)
    after = text[: node.start_mark.index] + new_text + text[node.end_mark.index :]
    _verify(text, after, doc, path, value)
    return after


def _insert(text: str, doc: int, path: YPath, i: int, node: Node, parent_col: int, value: Any) -> str:
    rest = list(path[i:])
    if isinstance(node, MappingNode):
        if node.flow_style:
            if node.value:
                raise EditError(f"{path_str(path[:i])} is a flow mapping; opsbot will not re-flow it")
            return _replace_empty_flow(text, doc, path, i, node, parent_col, rest, value)
        step = rest[0]
        if not isinstance(step, str):
            raise EditError(f"cannot insert {path_str(path)}: {path_str(path[:i])} is a mapping")
        indent = _mapping_indent(text, node, parent_col) if node.value else parent_col + 2
        new_value = _nest(rest[1:], value)
        if isinstance(new_value, dict | list):
            lines = [f"{' ' * indent}{step}:"]
            child_indent = indent + (_seq_style(text) if isinstance(new_value, list) else 2)
            lines += render_block(new_value, child_indent, _seq_style(text))
        else:
            lines = [f"{' ' * indent}{step}: {render_scalar(new_value)}"]
        at = _end_of_node(text, node) if node.value else _line_end(text, node.start_mark.index)
    elif isinstance(node, SequenceNode):
        step = rest[0]
        if not isinstance(step, Sel):
            raise EditError(f"cannot insert {path_str(path)} into a list by position")
        if node.flow_style:
            raise EditError(f"{path_str(path[:i])} is a flow list; opsbot will not re-flow it")
        item = {step.key: step.value}
        tail = _nest(rest[1:], value)
        if isinstance(tail, dict):
            item.update(tail)
        elif rest[1:]:
            raise EditError(f"cannot insert {path_str(path)}")
        if node.value:
            first = node.value[0]
            content_col = first.start_mark.column
            dash_col = text.rfind("-", _line_start(text, first.start_mark.index), first.start_mark.index)
            dash_col -= _line_start(text, first.start_mark.index)
            lines = render_block([item], dash_col, _seq_style(text))
            gap = content_col - dash_col - 1
            if gap != 1:
                lines = [
                    ln.replace("- ", "-" + " " * gap, 1) if j == 0 else " " * (gap - 1) + ln
                    for j, ln in enumerate(lines)
                ]
            at = _end_of_node(text, node)
        else:
            raise EditError(f"{path_str(path[:i])} is an empty list")
    else:
        raise EditError(f"{path_str(path[:i])} is a single value, not a mapping")
    after = _splice_lines(text, at, lines)
    _verify(text, after, doc, path, value)
    return after


def _replace_empty_flow(
    text: str,
    doc: int,
    path: YPath,
    i: int,
    node: MappingNode,
    parent_col: int,
    rest: list[PathStep],
    value: Any,
) -> str:
    """`values: {}` becomes a block mapping holding the new keys: the one re-flow that is unavoidable."""
    nested = _nest(rest, value)
    indent = parent_col + 2
    lines = render_block(nested, indent, _seq_style(text))
    start, end = node.start_mark.index, node.end_mark.index
    line_end = _line_end(text, end)
    tail = text[end:line_end]
    nl = _newline(text)
    after = text[:start].rstrip(" ") + tail.rstrip("\r\n") + nl + nl.join(lines) + nl + text[line_end:]
    _verify(text, after, doc, path, value)
    return after


def _nest(rest: Sequence[PathStep], value: Any) -> Any:
    out = value
    for step in reversed(rest):
        if isinstance(step, str):
            out = {step: out}
        elif isinstance(step, Sel):
            item = {step.key: step.value}
            if isinstance(out, dict):
                item.update(out)
            out = [item]
        else:
            raise EditError("cannot create a list position")
    return out


def _newline(text: str) -> str:
    """The file's own line ending, so inserted lines never mix CRLF into an LF file or back."""
    return "\r\n" if "\r\n" in text else "\n"


def _splice_lines(text: str, at: int, lines: list[str]) -> str:
    nl = _newline(text)
    block = nl.join(lines) + nl
    if at > 0 and not text[:at].endswith("\n"):
        block = nl + block
    return text[:at] + block + text[at:]


def append_item(text: str, doc: int, path: YPath, item: dict[str, Any]) -> str:
    """Append a mapping to the list at `path` (creating the key when missing)."""
    root = _doc_node(text, doc)
    seq = find(root, path)
    if seq is None:
        parent = find(root, path[:-1])
        if not isinstance(parent, MappingNode) or not isinstance(path[-1], str):
            raise EditError(f"cannot create {path_str(path)}")
        parent_col = (
            -2 if len(path) == 1 else int(parent.value[0][0].start_mark.column) - 2 if parent.value else 0
        )
        indent = _mapping_indent(text, parent, parent_col)
        offset = _seq_style(text)
        lines = [f"{' ' * indent}{path[-1]}:", *render_block([item], indent + offset, offset)]
        at = _end_of_node(text, parent) if parent.value else _line_end(text, parent.start_mark.index)
        if len(path) == 1:
            at = _end_of_node(text, parent)  # a new top-level key goes after the document's last node
        after = _splice_lines(text, at, lines)
    elif isinstance(seq, SequenceNode) and not seq.flow_style and seq.value:
        first = seq.value[0]
        ls = _line_start(text, first.start_mark.index)
        dash_col = text.rfind("-", ls, first.start_mark.index) - ls
        content_col = first.start_mark.column
        lines = render_block([item], dash_col, _seq_style(text))
        gap = content_col - dash_col - 1
        if gap > 1:
            lines = [
                ln.replace("- ", "-" + " " * gap, 1) if j == 0 else " " * (gap - 1) + ln
                for j, ln in enumerate(lines)
            ]
        after = _splice_lines(text, _end_of_node(text, seq), lines)
    else:
        raise EditError(f"{path_str(path)} is not a block list opsbot can extend")
    check = read_value(after, doc, path)
    if not isinstance(check, list) or not check or check[-1] != item:
        raise EditError(f"appending to {path_str(path)} did not read back as meant")
    return after
