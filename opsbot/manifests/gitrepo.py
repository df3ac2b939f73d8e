"""Read a manifest repo at one commit, straight from Git objects.

Why objects and not the work tree: planning must be deterministic for a given base commit, must not
care about local edits, and must work on the bare mirror the GitHub forge keeps. One long-lived
`git cat-file --batch` process serves every blob, so reading thousands of files costs one pipe.
"""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from opsbot.errors import CommandError, OpsbotError
from opsbot.manifests import safeyaml
from opsbot.manifests.cachedb import CacheDB

_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class GitError(OpsbotError):
    """git failed in a way that is not the user's input."""


def git(repo: str, *args: str, input: bytes | None = None, env: dict[str, str] | None = None) -> str:
    """Run git in `repo` and return stdout; raise GitError with git's own message on failure."""
    full_env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C", **(env or {})}
    proc = subprocess.run(
        ["git", "-C", repo, *args], input=input, capture_output=True, env=full_env, check=False
    )
    if proc.returncode != 0:
        raise GitError(f"git {args[0]}: {proc.stderr.decode(errors='replace').strip()}")
    return proc.stdout.decode()


class BlobReader:
    """A persistent `git cat-file --batch`; thread-safe, restarted if it dies."""

    def __init__(self, repo: str) -> None:
        self.repo = repo
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    def _start(self) -> subprocess.Popen[bytes]:
        if self._proc is None or self._proc.poll() is not None:
            self._proc = subprocess.Popen(
                ["git", "-C", self.repo, "cat-file", "--batch"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
        return self._proc

    def read_many(self, shas: Sequence[str], limit: int | None = None) -> list[bytes | int]:
        """Blob contents in order; a blob above `limit` bytes is skipped unread and given as its size."""
        with self._lock:
            proc = self._start()
            assert proc.stdin is not None and proc.stdout is not None
            out: list[bytes | int] = []
            # Write in chunks so neither pipe fills while the other waits.
            for start in range(0, len(shas), 256):
                chunk = shas[start : start + 256]
                proc.stdin.write("".join(f"{s}\n" for s in chunk).encode())
                proc.stdin.flush()
                for sha in chunk:
                    header = proc.stdout.readline().split()
                    if len(header) < 3 or header[1] == b"missing":
                        raise GitError(f"object {sha} missing")
                    size = int(header[2])
                    if limit is not None and size > limit:
                        left = size + 1  # never hold an oversized blob in memory: drain it
                        while left > 0:
                            left -= len(proc.stdout.read(min(left, 1 << 20)) or b"x" * left)
                        out.append(size)
                        continue
                    data = proc.stdout.read(size)
                    proc.stdout.read(1)  # trailing newline
                    out.append(data)
            return out

    def close(self) -> None:
        if self._proc is not None:
            if self._proc.stdin:
                self._proc.stdin.close()
            self._proc.wait(timeout=5)
            self._proc = None


class DocCache:
    """Parsed YAML by blob id: content-addressed, so it stays right across commits and processes.

    Why: a cold plan on a 20,000-file fleet spends most of its time parsing kustomization files that
    did not change since the last run. The rows live in opsbot's SQLite cache in the repo's git dir
    (never the work tree; see `cachedb` for why not pickle), are read one blob at a time as a command
    needs them, and are only ever a speed-up: a missing, broken or foreign file is ignored.
    """

    MAX_ENTRIES = 100_000

    def __init__(self, path: Path | None, db: CacheDB | None = None) -> None:
        self.path = path
        self.db = db if db is not None else CacheDB(path)
        self.data: dict[str, list[Any]] = {}
        self._missing: set[str] = set()
        self._pending: dict[str, list[Any]] = {}
        self._lock = threading.Lock()

    def get(self, sha: str) -> list[Any] | None:
        with self._lock:
            if sha in self.data:
                return self.data[sha]
            if sha in self._missing:
                return None
        found = self.db.get_doc(sha)
        with self._lock:
            if found is None:
                self._missing.add(sha)
            else:
                self.data[sha] = found
        return found

    def load(self, shas: Iterable[str]) -> set[str]:
        """Fetch many blobs' rows in one query; returns the ids still not cached."""
        with self._lock:
            wanted = [s for s in set(shas) if s not in self.data and s not in self._missing]
        found = self.db.get_docs(wanted)
        with self._lock:
            self.data.update(found)
            self._missing.update(s for s in wanted if s not in found)
            return {s for s in wanted if s not in found}

    def put(self, sha: str, docs: list[Any]) -> None:
        with self._lock:
            if len(self.data) < self.MAX_ENTRIES:
                self.data[sha] = docs
            self._missing.discard(sha)
            self._pending[sha] = docs

    def save(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
        self.db.put_docs(pending.items())


@dataclass
class Snapshot:
    """The repo's files at one commit: paths, and their texts on demand (cached)."""

    repo: str
    ref: str
    sha: str
    blobs: dict[str, str]  # path -> blob sha
    reader: BlobReader
    cache: DocCache = field(default_factory=lambda: DocCache(None))
    #: Symlinks in the tree: never read as files, and no write may go through one (see paths.py).
    links: frozenset[str] = field(default_factory=frozenset)
    _texts: dict[str, str] = field(default_factory=dict)
    _oversize: dict[str, int] = field(default_factory=dict)  # path -> size, never read
    _dirs: set[str] | None = None

    def exists(self, path: str) -> bool:
        return path in self.blobs

    def is_dir(self, path: str) -> bool:
        if self._dirs is None:
            dirs: set[str] = {""}
            for p in self.blobs:
                parent = PurePosixPath(p).parent
                while str(parent) not in dirs:
                    dirs.add(str(parent))
                    parent = parent.parent
            dirs.discard(".")
            dirs.add("")
            self._dirs = dirs
        return norm(path) in self._dirs

    def read(self, path: str) -> str:
        """The file's text; UnsafeYAML (a refusal naming the file) above safeyaml.MAX_FILE_BYTES."""
        if path not in self._texts:
            if path not in self.blobs:
                raise KeyError(path)
            if path not in self._oversize:
                self.prefetch([path])
            if path in self._oversize:
                safeyaml.refuse_size(path, self._oversize[path], safeyaml.MAX_FILE_BYTES)
        return self._texts[path]

    def docs(self, path: str) -> list[Any]:
        """Every YAML document of `path` (PyYAML's YAML 1.1, as Kubernetes reads it); [] if unparsable."""
        sha = self.blobs[path]
        cached = self.cache.get(sha)
        if cached is not None:
            return cached
        try:
            docs = safeyaml.load_file(self.read(path), path)
        except yaml.YAMLError:
            docs = []
        self.cache.put(sha, docs)
        return docs

    def prefetch(self, paths: Iterable[str]) -> None:
        wanted = [p for p in paths if p not in self._texts and p not in self._oversize and p in self.blobs]
        if not wanted:
            return
        datas = self.reader.read_many([self.blobs[p] for p in wanted], safeyaml.MAX_FILE_BYTES)
        for p, d in zip(wanted, datas, strict=True):
            if isinstance(d, int):
                self._oversize[p] = d
            else:
                self._texts[p] = d.decode("utf-8", errors="replace")

    def files_under(self, directory: str) -> list[str]:
        d = norm(directory)
        if not d:
            return sorted(self.blobs)
        prefix = d + "/"
        return sorted(p for p in self.blobs if p.startswith(prefix))

    def listdir(self, directory: str) -> tuple[list[str], list[str]]:
        """(files, subdirs) directly inside `directory`, as repo paths."""
        d = norm(directory)
        prefix = d + "/" if d else ""
        files, dirs = set(), set()
        for p in self.blobs:
            if p.startswith(prefix):
                rest = p[len(prefix) :]
                head, sep, _ = rest.partition("/")
                if sep:
                    dirs.add(prefix + head)
                else:
                    files.add(p)
        return sorted(files), sorted(dirs)


def norm(path: str) -> str:
    """Normalise a repo-relative path: no leading ./ or /, no trailing /, `..` resolved."""
    parts: list[str] = []
    for part in path.replace("\\", "/").split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts:
                parts.pop()
            else:
                parts.append("..")
            continue
        parts.append(part)
    return "/".join(parts)


def join(base_dir: str, rel: str) -> str:
    return norm(f"{base_dir}/{rel}" if base_dir else rel)


class GitRepo:
    """A manifest repo on disk (work tree or bare); hands out immutable snapshots per commit."""

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        if not os.path.exists(self.path):
            raise CommandError(f"No repository at {path}.")
        try:
            git(self.path, "rev-parse", "--git-dir")
        except GitError:
            raise CommandError(f"{path} is not a Git repository (run `git init` there first).") from None
        self.reader = BlobReader(self.path)
        git_dir = git(self.path, "rev-parse", "--absolute-git-dir").strip()
        self.db = CacheDB(Path(git_dir) / "opsbot" / "cache.sqlite3")
        self.cache = DocCache(self.db.path, self.db)
        self._snapshots: dict[str, Snapshot] = {}
        self._lock = threading.Lock()

    def resolve(self, ref: str) -> str:
        try:
            return git(self.path, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}").strip()
        except GitError:
            raise CommandError(f"No branch or commit {ref!r} in the manifest repo.") from None

    def default_branch(self) -> str:
        for candidate in ("HEAD",):
            try:
                name = git(self.path, "symbolic-ref", "--short", candidate).strip()
                if name:
                    return name
            except GitError:
                pass
        for name in ("main", "master"):
            if self.has_branch(name):
                return name
        raise CommandError("The manifest repo has no main or master branch.")

    def has_branch(self, name: str) -> bool:
        try:
            git(self.path, "rev-parse", "--verify", "--quiet", f"refs/heads/{name}")
            return True
        except GitError:
            return False

    def snapshot(self, ref: str) -> Snapshot:
        sha = self.resolve(ref)
        with self._lock:
            snap = self._snapshots.get(sha)
            if snap is None:
                listing = git(self.path, "ls-tree", "-r", "-z", "--full-tree", sha)
                blobs: dict[str, str] = {}
                links: set[str] = set()
                for entry in listing.split("\0"):
                    if not entry:
                        continue
                    meta, path = entry.split("\t", 1)
                    mode, kind, obj = meta.split()
                    if kind == "blob" and mode != "120000":
                        blobs[path] = obj
                    elif mode == "120000":
                        links.add(path)
                snap = Snapshot(self.path, ref, sha, blobs, self.reader, self.cache, links=frozenset(links))
                if len(self._snapshots) > 16:
                    self._snapshots.pop(next(iter(self._snapshots)))
                self._snapshots[sha] = snap
            return snap

    def log(self, ref: str, paths: Sequence[str], limit: int = 30) -> list[str]:
        """Commits (newest first) on `ref` that touched any of `paths`."""
        out = git(self.path, "log", f"-n{limit}", "--format=%H", ref, "--", *paths)
        return [line for line in out.splitlines() if line]

    def is_ancestor(self, ancestor: str, descendant: str) -> bool:
        proc = subprocess.run(
            ["git", "-C", self.path, "merge-base", "--is-ancestor", ancestor, descendant],
            capture_output=True,
            check=False,
        )
        return proc.returncode == 0

    def close(self) -> None:
        self.cache.save()
        self.db.close()
        self.reader.close()
