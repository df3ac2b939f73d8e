"""A repo-relative path that cannot leave the repo: the one place that decides it.

Why one module: anyone who can commit to the manifest repo (or edit `.opsbot.yaml`) can put a path
in front of opsbot — env paths, `clusters.path`, template names, kustomize references — and opsbot
writes files and runs `kubectl kustomize` on what those paths name. A check sprinkled per caller is
a check some caller forgets. Every such path goes through `repo_path`/`ref_path`/`segment` here, and
every file opsbot writes on disk goes through `write_inside`, which never follows a symlink.

The repo is read from Git objects (symlinks are not followed there: a symlink is a blob holding a
target, and `Snapshot` keeps them apart in `links`), so a symlink cannot make a *read* escape; what is
left is refusing to *write* through one, in the repo tree (`check_no_links`) and on disk.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Collection
from pathlib import Path
from typing import Any

from opsbot.errors import ConfigError

#: One path segment chosen by a person or a config (a template name, a cluster name): no `.`/`..`,
#: no separators, ASCII only.
_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


class PathRefused(ConfigError):
    """A path from the repo, its config or a command would leave the repo (or is not a path)."""


def _bad_chars(text: str) -> str | None:
    for c in text:
        if c == "\0":
            return "a NUL character"
        if ord(c) < 32 or ord(c) == 127:
            return f"a control character (U+{ord(c):04X})"
    return None


def normalise(path: str) -> str:
    """`a/./b/../c/` -> `a/c`; a leading `..` is kept (so escapes stay visible); `\\` counts as `/`."""
    parts: list[str] = []
    for part in path.replace("\\", "/").split("/"):
        if part in ("", "."):
            continue
        if part == ".." and parts and parts[-1] != "..":
            parts.pop()
            continue
        parts.append(part)
    return "/".join(parts)


def escapes(normalised: str) -> bool:
    return normalised == ".." or normalised.startswith("../")


def repo_path(raw: Any, where: str) -> str:
    """A path written in config (relative to the repo root), normalised; PathRefused if it leaves."""
    if not isinstance(raw, str):
        raise PathRefused(f"{where}: expected a path (text), got {_kind(raw)}")
    bad = _bad_chars(raw)
    if bad:
        raise PathRefused(f"{where}: the path contains {bad}")
    if raw.startswith(("/", "\\", "~")) or re.match(r"^[A-Za-z]:[\\/]", raw):
        raise PathRefused(f"{where}: {raw!r} is absolute; paths are relative to the repo root")
    out = normalise(raw)
    if escapes(out):
        raise PathRefused(f"{where}: {raw!r} leaves the repository")
    return out


def ref_path(base_dir: str, rel: str, where: str) -> str:
    """A reference inside a repo file (kustomize `resources`, a patch path), relative to `base_dir`."""
    bad = _bad_chars(rel)
    if bad:
        raise PathRefused(f"{where}: the reference {rel!r} contains {bad}")
    if rel.startswith(("/", "\\", "~")):
        raise PathRefused(f"{where}: {rel!r} is an absolute path; opsbot reads only files in the repository")
    out = normalise(f"{base_dir}/{rel}" if base_dir else rel)
    if escapes(out):
        raise PathRefused(f"{where}: {rel!r} points outside the repository")
    return out


def segment(raw: Any, what: str) -> str:
    """One name that becomes one path segment (a template name): never `.`, `..` or a separator."""
    if not isinstance(raw, str) or not _SEGMENT.fullmatch(raw):
        shown = raw if isinstance(raw, str) else _kind(raw)
        raise PathRefused(
            f'"{shown}" is not a {what} name: use letters, digits, "_", "." and "-", starting with a letter '
            "or digit."
        )
    return raw


def is_name(raw: str) -> bool:
    """A name people type and opsbot prints (an env): ASCII, no spaces or control characters."""
    return bool(_SEGMENT.fullmatch(raw))


def fill_name(pattern: str, name: str, where: str) -> str:
    """`clusters/{name}` with a checked name put in; plain replacement, never `str.format`."""
    return repo_path(pattern.replace("{name}", segment(name, "cluster")), where)


def check_no_links(path: str, links: Collection[str], what: str = "opsbot") -> None:
    """Refuse a repo path that is, or is below, a symlink in the tree: a write there would follow it."""
    parts = path.split("/")
    for i in range(1, len(parts) + 1):
        prefix = "/".join(parts[:i])
        if prefix in links:
            raise PathRefused(
                f"{prefix} is a symbolic link in the repository; {what} does not read or write through links."
            )


def mkdir_inside(root: Path, rel: str) -> Path:
    """root/rel as a directory (parents too), refusing any level that exists as a symlink or a file."""
    norm = normalise(rel)
    if escapes(norm) or rel.startswith("/"):
        raise PathRefused(f"{rel!r} is not a path inside {root}")
    current = root
    for part in norm.split("/") if norm else []:
        current = current / part
        with contextlib.suppress(FileExistsError):
            os.mkdir(current)
        if current.is_symlink() or not current.is_dir():
            raise PathRefused(f"{norm}: {current.relative_to(root)} is not a plain directory")
    return current


def write_inside(root: Path, rel: str, text: str) -> Path:
    """Write `text` at root/rel, creating directories, never following a symlink at any level."""
    norm = normalise(rel)
    if not norm or escapes(norm) or rel.startswith("/"):
        raise PathRefused(f"{rel!r} is not a path inside {root}")
    mkdir_inside(root, norm.rpartition("/")[0])
    target = root / norm
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(target, flags, 0o644)
    except OSError as exc:
        if target.is_symlink():
            raise PathRefused(f"{norm} is a symbolic link; opsbot does not write through links") from None
        raise PathRefused(f"{norm}: cannot write ({exc.strerror})") from None
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    return target


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    return type(value).__name__
