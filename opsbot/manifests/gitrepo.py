"""Read a manifest repo at one commit, straight from Git objects.

Why objects and not the work tree: planning must be deterministic for a given base commit, must not
care about local edits, and must work on the bare mirror the GitHub forge keeps. One long-lived
`git cat-file --batch` process serves every blob, so reading thousands of files costs one pipe.
"""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Collection, Iterable, Iterator, Sequence
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
        """Fetch many blobs' rows in one query; returns those of `shas` that are still not cached."""
        asked = set(shas)
        with self._lock:
            wanted = [s for s in asked if s not in self.data and s not in self._missing]
        found = self.db.get_docs(wanted)
        with self._lock:
            self.data.update(found)
            self._missing.update(s for s in wanted if s not in found)
            return {s for s in asked if s not in self.data}

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


_BLOB_MODES = (b"100644", b"100755", b"100664")


class Snapshot:
    """The repo's files at one commit: paths, and their texts on demand (cached).

    Why lazy: listing a 60,000-file tree costs more than a warm command's whole plan. Point questions
    (does this path exist, is it a dir, its blob id) walk only the trees on the way, one `cat-file`
    round trip per new dir; the full path -> blob map (`blobs`) is listed only for the questions that
    really concern the whole tree (discovery, a cold index). Symlinks and submodules are not files.
    """

    def __init__(
        self,
        repo: str,
        ref: str,
        sha: str,
        blobs: dict[str, str] | None,
        reader: BlobReader,
        cache: DocCache | None = None,
        links: frozenset[str] | None = None,
    ) -> None:
        self.repo = repo
        self.ref = ref
        self.sha = sha
        self.reader = reader
        self.cache = cache if cache is not None else DocCache(None)
        self._blobs = blobs
        self._links = links
        self._texts: dict[str, str] = {}
        self._oversize: dict[str, int] = {}  # path -> size, never read
        self._dirs: set[str] | None = None
        # dir -> {name: (mode, object id)}; None for "no such dir"
        self._trees: dict[str, dict[str, tuple[bytes, str]] | None] = {}
        self._has_blob: dict[str, bool] = {}
        self._lock = threading.RLock()

    @property
    def blobs(self) -> dict[str, str]:
        """Every regular file at this commit: path -> blob id (listed on first use)."""
        if self._blobs is None:
            self._list()
        assert self._blobs is not None
        return self._blobs

    @property
    def links(self) -> Collection[str]:
        """Symlinks in the tree: never read as files, and no write may go through one (see paths.py).

        Membership (`path in snap.links`, what paths.check_no_links asks) walks trees like `blob`;
        only iterating lists the whole tree.
        """
        return self._links if self._links is not None else _Links(self)

    def _list(self) -> None:
        listing = git(self.repo, "ls-tree", "-r", "-z", "--full-tree", self.sha)
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
        self._blobs = blobs
        self._links = frozenset(links)

    def is_link(self, path: str) -> bool:
        if self._links is not None:
            return path in self._links
        parent, _, name = path.rpartition("/")
        if not name:
            return False
        entries = self._tree(parent)
        entry = entries.get(name) if entries is not None else None
        return entry is not None and entry[0] == b"120000"

    def _tree(self, directory: str) -> dict[str, tuple[bytes, str]] | None:
        with self._lock:
            if directory in self._trees:
                return self._trees[directory]
            if not directory:
                obj = f"{self.sha}^{{tree}}"
            else:
                parent, _, name = directory.rpartition("/")
                up = self._tree(parent)
                entry = up.get(name) if up is not None else None
                if entry is None or entry[0] != b"40000":
                    self._trees[directory] = None
                    return None
                obj = entry[1]
            raw = self.reader.read_many([obj])[0]
            assert isinstance(raw, bytes)  # no size limit asked: never a skipped size
            entries: dict[str, tuple[bytes, str]] = {}
            width = len(self.sha) // 2
            i = 0
            while i < len(raw):
                space = raw.index(b" ", i)
                nul = raw.index(b"\0", space)
                mode = raw[i:space]
                entries[raw[space + 1 : nul].decode("utf-8", errors="surrogateescape")] = (
                    mode,
                    raw[nul + 1 : nul + 1 + width].hex(),
                )
                i = nul + 1 + width
            self._trees[directory] = entries
            return entries

    def blob(self, path: str) -> str | None:
        """The blob id of the regular file at `path`, or None."""
        if self._blobs is not None:
            return self._blobs.get(path)
        parent, _, name = path.rpartition("/")
        if not name:
            return None
        entries = self._tree(parent)
        entry = entries.get(name) if entries is not None else None
        return entry[1] if entry is not None and entry[0] in _BLOB_MODES else None

    def exists(self, path: str) -> bool:
        return self.blob(path) is not None

    def is_dir(self, path: str) -> bool:
        if self._blobs is not None:
            if self._dirs is None:
                dirs: set[str] = {""}
                for p in self._blobs:
                    parent = PurePosixPath(p).parent
                    while str(parent) not in dirs:
                        dirs.add(str(parent))
                        parent = parent.parent
                dirs.discard(".")
                dirs.add("")
                self._dirs = dirs
            return norm(path) in self._dirs
        return self._holds_blob(norm(path))

    def _holds_blob(self, directory: str) -> bool:
        """A dir counts only if some regular file lies below it (as with the full listing)."""
        if not directory:
            return True
        with self._lock:
            if directory not in self._has_blob:
                entries = self._tree(directory)
                found = entries is not None and (
                    any(mode in _BLOB_MODES for mode, _ in entries.values())
                    or any(
                        self._holds_blob(f"{directory}/{name}")
                        for name, (mode, _) in entries.items()
                        if mode == b"40000"
                    )
                )
                self._has_blob[directory] = found
            return self._has_blob[directory]

    def read(self, path: str) -> str:
        """The file's text; UnsafeYAML (a refusal naming the file) above safeyaml.MAX_FILE_BYTES."""
        if path not in self._texts:
            if self.blob(path) is None:
                raise KeyError(path)
            if path not in self._oversize:
                self.prefetch([path])
            if path in self._oversize:
                safeyaml.refuse_size(path, self._oversize[path], safeyaml.MAX_FILE_BYTES)
        return self._texts[path]

    def docs(self, path: str) -> list[Any]:
        """Every YAML document of `path` (PyYAML's YAML 1.1, as Kubernetes reads it); [] if unparsable."""
        sha = self.blob(path)
        if sha is None:
            raise KeyError(path)
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
        wanted = {
            p: sha
            for p in paths
            if p not in self._texts and p not in self._oversize and (sha := self.blob(p)) is not None
        }
        if not wanted:
            return
        datas = self.reader.read_many(list(wanted.values()), safeyaml.MAX_FILE_BYTES)
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
        if self._blobs is None:
            entries = self._tree(d) or {}
            for name, (mode, _) in entries.items():
                if mode in _BLOB_MODES:
                    files.add(prefix + name)
                elif mode == b"40000" and self._holds_blob(prefix + name):
                    dirs.add(prefix + name)
            return sorted(files), sorted(dirs)
        for p in self.blobs:
            if p.startswith(prefix):
                rest = p[len(prefix) :]
                head, sep, _ = rest.partition("/")
                if sep:
                    dirs.add(prefix + head)
                else:
                    files.add(p)
        return sorted(files), sorted(dirs)


class _Links(Collection[str]):
    """A snapshot's symlinks, answered per path from the trees (see Snapshot.links)."""

    def __init__(self, snap: Snapshot) -> None:
        self.snap = snap

    def __contains__(self, path: object) -> bool:
        return isinstance(path, str) and self.snap.is_link(path)

    def _all(self) -> frozenset[str]:
        self.snap._list()
        assert self.snap._links is not None
        return self.snap._links

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())


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
                snap = Snapshot(self.path, ref, sha, None, self.reader, self.cache)
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
