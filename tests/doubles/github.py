"""A GitHub REST + Git smart-HTTP double, backed by a real bare Git repository.

Why a double and not mocks: opsbot's GitHub forge is only trustworthy if it has been run against
something that refuses what GitHub refuses (422 on an existing ref or an existing PR, 405 on a
protected branch, 409 on a moved head, 401 on a bad token, rate limits with their headers) and
whose writes are real Git objects a test can inspect with `git show`. Every tree, commit, ref and
merge here is made by `git` itself, so a wrong tree or a lost file shows up as it would on GitHub.

What it serves (base path configurable, `/api/v3` by default, GitHub Enterprise style):

- REST: the Git Data API (refs, commits, trees), pulls (create, get, list, merge, edit), issue
  comments and labels, reviews, and `POST /app/installations/{id}/access_tokens` for App auth.
- Git smart HTTP at `/{owner}/{name}.git` through `git http-backend`, with GitHub's auth rule
  (HTTP Basic, the password is the token), so `git clone`/`git fetch` are real.
- Outbound signed webhooks (`X-Hub-Signature-256`) in GitHub's documented payload shapes:
  `add_hook(url, secret)` registers a hook like a repository webhook; every PR opened, merged or
  closed, review submitted and branch moved (API or `commit_files`) then queues the event GitHub
  would send, with the payload as it was at that moment, and `deliver()` sends the queue. Tests
  decide when GitHub's hookshot runs, so nothing waits on a timer.

Tests drive it through Python: `commit_files` (move a branch like a push would), `merge_by_hand`,
`add_review`, `set_status`, `protect`, `inject` (faults), `requests` (what was asked, in order).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import itertools
import json
import os
import re
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.doubles.serving import serve_app_in_thread

DOCS = "https://docs.github.com/rest"
ZERO_SHA = "0" * 40
SECONDARY_RATE_LIMIT_MESSAGE = (
    "You have exceeded a secondary rate limit. Please wait a few minutes before you try again. "
    "If you reach out to GitHub Support for help, please include the request ID "
    "0000:0000:0000000:0000000:00000000."
)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class GitError(RuntimeError):
    pass


# ------------------------------------------------------------------------------------------- git


class BareRepo:
    """Thin wrapper over `git` in one bare repository: every object the double makes is real."""

    def __init__(self, path: Path, default_branch: str = "main") -> None:
        self.path = path
        if not (path / "HEAD").exists():
            path.mkdir(parents=True, exist_ok=True)
            self.git("init", "--bare", "-q", f"--initial-branch={default_branch}")
            # smart HTTP serves the repo as is; no hooks, no reflog surprises
            self.git("config", "http.receivepack", "true")
            self.git("config", "uploadpack.allowAnySHA1InWant", "true")

    def git(self, *args: str, input: str | bytes | None = None, env: dict[str, str] | None = None) -> str:
        full_env = {
            **os.environ,
            "GIT_AUTHOR_NAME": "GitHub",
            "GIT_AUTHOR_EMAIL": "noreply@github.com",
            "GIT_COMMITTER_NAME": "GitHub",
            "GIT_COMMITTER_EMAIL": "noreply@github.com",
            "GIT_CONFIG_NOSYSTEM": "1",
            "HOME": str(self.path),
            **(env or {}),
        }
        data = input.encode() if isinstance(input, str) else input
        proc = subprocess.run(
            ["git", "--git-dir", str(self.path), *args],
            input=data,
            capture_output=True,
            env=full_env,
            check=False,
        )
        if proc.returncode != 0:
            raise GitError(proc.stderr.decode(errors="replace").strip() or f"git {args[0]} failed")
        return proc.stdout.decode(errors="replace")

    def rev(self, name: str) -> str | None:
        try:
            return self.git("rev-parse", "--verify", "-q", name).strip() or None
        except GitError:
            return None

    def object_type(self, sha: str) -> str | None:
        try:
            return self.git("cat-file", "-t", sha).strip()
        except GitError:
            return None

    def branch_sha(self, branch: str) -> str | None:
        return self.rev(f"refs/heads/{branch}^{{commit}}") if self.rev(f"refs/heads/{branch}") else None

    def hash_blob(self, content: bytes) -> str:
        return self.git("hash-object", "-w", "--stdin", input=content).strip()

    def write_tree(self, base_tree: str | None, entries: list[tuple[str, str, str | None]]) -> str:
        """Apply (path, mode, sha-or-None) to `base_tree` with a private index; None deletes."""
        with tempfile.TemporaryDirectory() as tmp:
            env = {"GIT_INDEX_FILE": os.path.join(tmp, "index")}
            if base_tree:
                self.git("read-tree", base_tree, env=env)
            else:
                self.git("read-tree", "--empty", env=env)
            lines = []
            for path, mode, sha in entries:
                if sha is None:
                    if not self.git("ls-files", "--", path, env=env).strip():
                        raise GitError(f"path {path} does not exist")
                    lines.append(f"0 {ZERO_SHA}\t{path}\n")
                else:
                    lines.append(f"{mode} {sha}\t{path}\n")
            if lines:
                self.git("update-index", "--index-info", input="".join(lines), env=env)
            return self.git("write-tree", env=env).strip()

    def commit_tree(
        self, tree: str, parents: list[str], message: str, author: dict[str, Any] | None = None
    ) -> str:
        args = ["commit-tree", tree]
        for p in parents:
            args += ["-p", p]
        env = {}
        if author:
            env["GIT_AUTHOR_NAME"] = str(author.get("name", "GitHub"))
            env["GIT_AUTHOR_EMAIL"] = str(author.get("email", "noreply@github.com"))
        return self.git(*args, input=message, env=env).strip()

    def update_ref(self, ref: str, new: str, old: str | None = None) -> None:
        """Compare-and-swap: `old=ZERO_SHA` means 'must not exist', None means 'any'."""
        args = ["update-ref", ref, new]
        if old is not None:
            args.append(old)
        self.git(*args)

    def delete_ref(self, ref: str) -> None:
        self.git("update-ref", "-d", ref)

    def is_ancestor(self, a: str, b: str) -> bool:
        try:
            self.git("merge-base", "--is-ancestor", a, b)
            return True
        except GitError:
            return False

    def merge_tree(self, base: str, head: str) -> str | None:
        """The merged tree, or None on conflict (git 2.38+ `merge-tree --write-tree`)."""
        proc = subprocess.run(
            ["git", "--git-dir", str(self.path), "merge-tree", "--write-tree", "--no-messages", base, head],
            capture_output=True,
            check=False,
        )
        if proc.returncode == 0:
            return proc.stdout.decode().split()[0]
        if proc.returncode == 1:
            return None
        raise GitError(proc.stderr.decode(errors="replace"))

    def read_commit(self, sha: str) -> dict[str, Any]:
        raw = self.git("cat-file", "commit", sha)
        head, _, message = raw.partition("\n\n")
        info: dict[str, Any] = {"parents": [], "message": message}
        for line in head.splitlines():
            key, _, value = line.partition(" ")
            if key == "tree":
                info["tree"] = value
            elif key == "parent":
                info["parents"].append(value)
            elif key in ("author", "committer"):
                m = re.match(r"(.*) <(.*)> (\d+) ([+-]\d{4})", value)
                if m:
                    info[key] = {"name": m[1], "email": m[2], "date": _iso(int(m[3]))}
        return info

    def ls_tree(self, tree: str) -> list[dict[str, Any]]:
        out = []
        for line in self.git("ls-tree", "-l", tree).splitlines():
            meta, _, path = line.partition("\t")
            mode, kind, sha, size = meta.split()
            entry: dict[str, Any] = {"path": path, "mode": mode, "type": kind, "sha": sha}
            if kind == "blob":
                entry["size"] = int(size)
            out.append(entry)
        return out

    def show(self, rev: str, path: str) -> str:
        return self.git("show", f"{rev}:{path}")

    def files(self, rev: str) -> list[str]:
        return self.git("ls-tree", "-r", "--name-only", rev).split()

    def changed_files(self, base: str, head: str) -> list[str]:
        return self.git("diff", "--name-only", base, head).split()


# ------------------------------------------------------------------------------------------- state


@dataclass
class Fault:
    """One injected misbehaviour, used for the next `count` matching requests.

    kind: `secondary` (403 + Retry-After), `primary` (403 + X-RateLimit-Remaining 0 and Reset),
    `429`, `403` (a permission refusal: no rate-limit headers, not worth retrying), `500`, `502`,
    `delay` (answer after `seconds`; with `after=True` the request is
    processed first, so the write happened although the client timed out: the dangerous case).
    """

    kind: str
    count: int = 1
    method: str | None = None
    path: str | None = None  # regular expression searched in the path after the API base
    seconds: float = 1.0
    after: bool = True

    def matches(self, method: str, path: str) -> bool:
        if self.method and self.method.upper() != method.upper():
            return False
        return not (self.path and not re.search(self.path, path))


@dataclass
class Protection:
    required_approving_review_count: int = 0
    required_status_checks: tuple[str, ...] = ()


@dataclass
class Review:
    id: int
    user: str
    state: str  # APPROVED | CHANGES_REQUESTED | COMMENTED
    body: str
    commit_id: str
    submitted_at: float


@dataclass
class Pull:
    number: int
    title: str
    body: str
    head: str
    base: str
    user: str
    head_sha: str
    base_sha: str
    created_at: float
    updated_at: float
    state: str = "open"
    draft: bool = False
    merged: bool = False
    merged_at: float | None = None
    closed_at: float | None = None
    merged_by: str | None = None
    merge_commit_sha: str | None = None
    closed_by: str | None = None
    labels: list[str] = field(default_factory=list)
    comments: list[dict[str, Any]] = field(default_factory=list)
    reviews: list[Review] = field(default_factory=list)


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str  # after the API base for REST; the full path for git
    query: dict[str, str]
    json: Any
    kind: str  # api | git | app


@dataclass(frozen=True)
class Hook:
    """A repository webhook: where to POST, the shared secret, and the events it subscribes to."""

    url: str
    secret: str
    events: frozenset[str]


@dataclass(frozen=True)
class Delivery:
    """One delivery attempt, as GitHub's "Recent Deliveries" tab shows it."""

    event: str
    delivery: str
    status: int
    body: bytes


@dataclass
class _Token:
    value: str
    expires_at: float | None  # None: a PAT that never expires
    revoked: bool = False


@dataclass
class HttpError(Exception):
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


def _validation(top: str | None = None, /, **error: Any) -> HttpError:
    """GitHub's 422: either a bare message, or "Validation Failed" with one `errors` entry."""
    body: dict[str, Any] = {"message": "Validation Failed", "documentation_url": DOCS, "status": "422"}
    if error:
        body["errors"] = [error]
    elif top is not None:
        body["message"] = top
    return HttpError(422, body)


def _not_found() -> HttpError:
    return HttpError(404, {"message": "Not Found", "documentation_url": DOCS, "status": "404"})


# ------------------------------------------------------------------------------------------- double


class GitHubDouble:
    """One repository on a fake GitHub; thread-safe, so tests may poke it while a server runs."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        owner: str = "acme",
        name: str = "fleet",
        token: str = "ghp_double_token",
        base_path: str = "/api/v3",
        default_branch: str = "main",
        app_id: str | None = None,
        app_public_key: str | None = None,
        installation_id: int = 4242,
        installation_token_ttl: float = 3600.0,
        clock: Callable[[], float] = time.time,
        bot_login: str = "opsbot[bot]",
    ) -> None:
        self.root = Path(root)
        self.owner = owner
        self.name = name
        self.full_name = f"{owner}/{name}"
        self.base_path = "/" + base_path.strip("/") if base_path.strip("/") else ""
        self.default_branch = default_branch
        self.app_id = app_id
        self.app_public_key = app_public_key
        self.installation_id = installation_id
        self.installation_token_ttl = installation_token_ttl
        self.clock = clock
        self.bot_login = bot_login
        self.repo = BareRepo(self.root / owner / f"{name}.git", default_branch)
        self.lock = threading.RLock()
        self.tokens: dict[str, _Token] = {}
        if token:
            self.tokens[token] = _Token(token, None)
        self.requests: list[Recorded] = []
        self.faults: list[Fault] = []
        self.pulls: dict[int, Pull] = {}
        self.protection: dict[str, Protection] = {}
        self.statuses: dict[str, dict[str, str]] = {}  # sha -> context -> state
        #: every status created through the API, oldest first (with `_sha`), as GitHub keeps them
        self.status_log: list[dict[str, Any]] = []
        self.allowed_merge_methods: set[str] = {"merge", "squash", "rebase"}
        self.issued_tokens: list[str] = []
        self.deliveries: list[dict[str, Any]] = []
        self.hooks: list[Hook] = []
        self.outgoing: list[tuple[str, dict[str, Any]]] = []
        #: REST base URL as clients see it (set when served); payload URLs point back at it
        self.public_api_url: str | None = None
        self._ids = itertools.count(1000)
        self._numbers = itertools.count(1)
        self._rate_remaining = 5000

    # ---------------------------------------------------------------- test-side controls

    def commit_files(
        self,
        branch: str,
        files: Mapping[str, str | None],
        message: str = "update",
        author: str = "alice",
        start: str | None = None,
    ) -> str:
        """Commit on `branch` as a user pushing would (None deletes).

        A new branch starts from `start` (the default branch unless told), like `git switch -c`.
        """
        with self.lock:
            parent = self.repo.branch_sha(branch)
            if parent is None:
                parent = self.repo.branch_sha(start or self.default_branch)
            base_tree = self.repo.read_commit(parent)["tree"] if parent else None
            entries: list[tuple[str, str, str | None]] = []
            for path, text in files.items():
                entries.append((path, "100644", None if text is None else self.repo.hash_blob(text.encode())))
            tree = self.repo.write_tree(base_tree, entries)
            sha = self.repo.commit_tree(
                tree, [parent] if parent else [], message, {"name": author, "email": f"{author}@example.com"}
            )
            before = self.repo.branch_sha(branch) or ZERO_SHA
            self.repo.update_ref(f"refs/heads/{branch}", sha, before)
            self._emit_push(branch, before, sha, author)
            return sha

    def branch_sha(self, branch: str) -> str | None:
        with self.lock:
            return self.repo.branch_sha(branch)

    def show(self, rev: str, path: str) -> str:
        return self.repo.show(rev, path)

    def protect(
        self,
        branch: str,
        *,
        required_approving_review_count: int = 0,
        required_status_checks: tuple[str, ...] = (),
    ) -> None:
        with self.lock:
            self.protection[branch] = Protection(
                required_approving_review_count, tuple(required_status_checks)
            )

    def set_status(self, sha: str, context: str, state: str = "success") -> None:
        with self.lock:
            self.statuses.setdefault(sha, {})[context] = state

    def add_review(self, number: int, user: str, state: str = "APPROVED", body: str = "") -> Review:
        with self.lock:
            pr = self.pulls[number]
            review = Review(next(self._ids), user, state.upper(), body, self._head_sha(pr), self.clock())
            pr.reviews.append(review)
            self._emit("pull_request_review", lambda base: self.review_payload(base, number, review.id))
            return review

    def merge_by_hand(self, number: int, *, merge_method: str = "merge", user: str = "bob") -> str:
        """Merge as a person pressing the button would; raises HttpError where GitHub would refuse."""
        with self.lock:
            return self._merge(self.pulls[number], merge_method, None, None, None, user)

    def open_by_hand(
        self, head: str, title: str, *, user: str = "dave", base: str | None = None, body: str = ""
    ) -> int:
        """A PR opened by a person on GitHub (not by opsbot); `head` must exist (`commit_files`)."""
        with self.lock:
            base = base or self.default_branch
            head_sha, base_sha = self.repo.branch_sha(head), self.repo.branch_sha(base)
            if head_sha is None or base_sha is None:
                raise ValueError(f"no branch {head if head_sha is None else base}")
            now = self.clock()
            pr = Pull(
                number=next(self._numbers),
                title=title,
                body=body,
                head=head,
                base=base,
                user=user,
                head_sha=head_sha,
                base_sha=self.repo.git("merge-base", base_sha, head_sha).strip(),
                created_at=now,
                updated_at=now,
            )
            self.pulls[pr.number] = pr
            number = pr.number
            self._emit("pull_request", lambda b: self.pull_request_payload(b, number, "opened"))
            return number

    def close_by_hand(self, number: int, user: str = "bob") -> None:
        with self.lock:
            pr = self.pulls[number]
            pr.head_sha = self._head_sha(pr)
            pr.state, pr.closed_at, pr.closed_by = "closed", self.clock(), user
            self._emit("pull_request", lambda base: self.pull_request_payload(base, number, "closed"))

    def add_hook(
        self,
        url: str,
        secret: str,
        events: tuple[str, ...] = ("pull_request", "pull_request_review", "push"),
    ) -> Hook:
        """Register a repository webhook (127.0.0.1 only); events are queued from now on."""
        if not url.startswith("http://127.0.0.1"):
            raise ValueError("the double only delivers to 127.0.0.1")
        hook = Hook(url, secret, frozenset(events))
        with self.lock:
            self.hooks.append(hook)
        return hook

    def _emit(self, event: str, build: Callable[[str], dict[str, Any]]) -> None:
        """Queue `event` with its payload as of now, if any hook wants it (caller holds the lock)."""
        if self.public_api_url is None or not any(event in h.events for h in self.hooks):
            return
        self.outgoing.append((event, build(self.public_api_url)))

    def _emit_push(self, branch: str, before: str, after: str, pusher: str) -> None:
        login = pusher.removesuffix("[bot]")
        self._emit("push", lambda base: self.push_payload(base, branch, before, after, login))
        if before == ZERO_SHA or after == ZERO_SHA:
            return
        # GitHub: a push to the head branch of an open PR is `pull_request` `synchronize`, sent by
        # the pusher, with the old and new head.
        for pr in self.pulls.values():
            if pr.state == "open" and pr.head == branch:
                number = pr.number
                self._emit(
                    "pull_request",
                    lambda base, n=number: {
                        **self.pull_request_payload(base, n, "synchronize", pusher),
                        "before": before,
                        "after": after,
                    },
                )

    def pending_events(self) -> list[str]:
        with self.lock:
            return [event for event, _ in self.outgoing]

    def deliver(self, events: tuple[str, ...] | None = None) -> list[Delivery]:
        """Send the queued events (all, or only those named) to every hook subscribed to them.

        Call it from a thread other than the receiver's event loop. The queue lock is not held
        while sending, so a receiver may call back into the double (e.g. fetch the mirror).
        """
        with self.lock:
            batch = [(e, p) for e, p in self.outgoing if events is None or e in events]
            self.outgoing = [(e, p) for e, p in self.outgoing if not (events is None or e in events)]
            hooks = list(self.hooks)
        out = []
        for event, payload in batch:
            for hook in hooks:
                if event in hook.events:
                    delivery = str(uuid.uuid4())
                    status, body = self.send_webhook(hook.url, event, payload, hook.secret, delivery)
                    out.append(Delivery(event, delivery, status, body))
        return out

    def redeliver(self, delivery: str) -> Delivery:
        """GitHub's "Redeliver" button: the same payload under the same X-GitHub-Delivery id."""
        with self.lock:
            sent = next(d for d in self.deliveries if d["delivery"] == delivery)
            hooks = [h for h in self.hooks if sent["event"] in h.events]
        hook = hooks[0]
        status, body = self.send_webhook(hook.url, sent["event"], sent["payload"], hook.secret, delivery)
        return Delivery(sent["event"], delivery, status, body)

    def inject(
        self,
        kind: str,
        count: int = 1,
        *,
        method: str | None = None,
        path: str | None = None,
        seconds: float = 1.0,
        after: bool = True,
    ) -> Fault:
        fault = Fault(kind, count, method, path, seconds, after)
        with self.lock:
            self.faults.append(fault)
        return fault

    def expire_tokens(self) -> None:
        """Revoke every installation token issued so far, as GitHub does when they expire."""
        with self.lock:
            for tok in self.tokens.values():
                if tok.expires_at is not None:
                    tok.revoked = True

    def api_calls(self, method: str | None = None, path: str | None = None) -> list[Recorded]:
        """REST calls on the repository (not git transport, not App token minting)."""
        with self.lock:
            return [
                r
                for r in self.requests
                if r.kind == "api"
                and (method is None or r.method == method.upper())
                and (path is None or re.search(path, r.path))
            ]

    def reset_log(self) -> None:
        with self.lock:
            self.requests.clear()

    def open_pulls(self, head: str | None = None) -> list[Pull]:
        with self.lock:
            return [p for p in self.pulls.values() if p.state == "open" and (head is None or p.head == head)]

    def git_url(self, base_url: str) -> str:
        """Clone URL for a server whose REST base is `base_url`."""
        root = base_url[: len(base_url) - len(self.base_path)] if self.base_path else base_url
        return f"{root.rstrip('/')}/{self.full_name}.git"

    # ---------------------------------------------------------------- JSON shapes

    def _user(self, base: str, login: str) -> dict[str, Any]:
        uid = int(hashlib.sha1(login.encode()).hexdigest()[:6], 16)
        kind = "Bot" if login.endswith("[bot]") else ("Organization" if login == self.owner else "User")
        return {
            "login": login,
            "id": uid,
            "node_id": f"U_{uid}",
            "avatar_url": "",
            "url": f"{base}/users/{login}",
            "html_url": f"{self._web(base)}/{login}",
            "type": kind,
            "site_admin": False,
        }

    def _web(self, base: str) -> str:
        return base[: len(base) - len(self.base_path)] if self.base_path else base

    def _repo_json(self, base: str) -> dict[str, Any]:
        r = f"{base}/repos/{self.full_name}"
        web_root = self._web(base)
        return {
            "id": 1296269,
            "node_id": "R_1296269",
            "name": self.name,
            "full_name": self.full_name,
            "private": True,
            "owner": self._user(base, self.owner),
            "html_url": f"{web_root}/{self.full_name}",
            "description": "manifests",
            "fork": False,
            "url": r,
            "pulls_url": f"{r}/pulls{{/number}}",
            "issues_url": f"{r}/issues{{/number}}",
            "git_refs_url": f"{r}/git/refs{{/sha}}",
            "clone_url": f"{web_root}/{self.full_name}.git",
            "default_branch": self.default_branch,
            "visibility": "private",
            "allow_merge_commit": "merge" in self.allowed_merge_methods,
            "allow_squash_merge": "squash" in self.allowed_merge_methods,
            "allow_rebase_merge": "rebase" in self.allowed_merge_methods,
            "permissions": {"admin": False, "maintain": False, "push": True, "triage": True, "pull": True},
        }

    def _ref_json(self, base: str, ref: str, sha: str) -> dict[str, Any]:
        r = f"{base}/repos/{self.full_name}"
        return {
            "ref": ref,
            "node_id": f"REF_{hashlib.sha1(ref.encode()).hexdigest()[:12]}",
            "url": f"{r}/git/{ref}",
            "object": {"sha": sha, "type": "commit", "url": f"{r}/git/commits/{sha}"},
        }

    def _commit_json(self, base: str, sha: str) -> dict[str, Any]:
        r = f"{base}/repos/{self.full_name}"
        info = self.repo.read_commit(sha)
        return {
            "sha": sha,
            "node_id": f"C_{sha[:12]}",
            "url": f"{r}/git/commits/{sha}",
            "html_url": f"{self._web(base)}/{self.full_name}/commit/{sha}",
            "author": info.get("author"),
            "committer": info.get("committer"),
            "message": info["message"].rstrip("\n"),
            "tree": {"sha": info["tree"], "url": f"{r}/git/trees/{info['tree']}"},
            "parents": [
                {
                    "sha": p,
                    "url": f"{r}/git/commits/{p}",
                    "html_url": f"{self._web(base)}/{self.full_name}/commit/{p}",
                }
                for p in info["parents"]
            ],
            "verification": {"verified": False, "reason": "unsigned", "signature": None, "payload": None},
        }

    def _tree_json(self, base: str, sha: str) -> dict[str, Any]:
        r = f"{base}/repos/{self.full_name}"
        entries = []
        for e in self.repo.ls_tree(sha):
            kind = "trees" if e["type"] == "tree" else "blobs"
            entries.append({**e, "url": f"{r}/git/{kind}/{e['sha']}"})
        return {"sha": sha, "url": f"{r}/git/trees/{sha}", "tree": entries, "truncated": False}

    def _head_sha(self, pr: Pull) -> str:
        if pr.state == "open":
            live = self.repo.branch_sha(pr.head)
            if live:
                pr.head_sha = live
        return pr.head_sha

    def _label_json(self, base: str, name: str) -> dict[str, Any]:
        lid = int(hashlib.sha1(name.encode()).hexdigest()[:6], 16)
        return {
            "id": lid,
            "node_id": f"LA_{lid}",
            "url": f"{base}/repos/{self.full_name}/labels/{name}",
            "name": name,
            "color": "ededed",
            "default": False,
            "description": None,
        }

    def _mergeable(self, pr: Pull) -> tuple[bool | None, str]:
        if pr.state != "open":
            return None, "unknown"
        base_sha = self.repo.branch_sha(pr.base)
        head_sha = self._head_sha(pr)
        if base_sha is None:
            return False, "dirty"
        if self.repo.merge_tree(base_sha, head_sha) is None:
            return False, "dirty"
        if self._blocked_by(pr):
            return True, "blocked"
        return True, "clean"

    def pull_json(self, base: str, pr: Pull) -> dict[str, Any]:
        r = f"{base}/repos/{self.full_name}"
        web_pr = f"{self._web(base)}/{self.full_name}/pull/{pr.number}"
        head_sha = self._head_sha(pr)
        base_sha = self.repo.branch_sha(pr.base) or pr.base_sha
        mergeable, mergeable_state = self._mergeable(pr)
        repo_json = self._repo_json(base)
        files = self.repo.changed_files(pr.base_sha, head_sha) if self.repo.object_type(head_sha) else []
        return {
            "url": f"{r}/pulls/{pr.number}",
            "id": 50_000 + pr.number,
            "node_id": f"PR_{pr.number}",
            "html_url": web_pr,
            "diff_url": f"{web_pr}.diff",
            "patch_url": f"{web_pr}.patch",
            "issue_url": f"{r}/issues/{pr.number}",
            "commits_url": f"{r}/pulls/{pr.number}/commits",
            "review_comments_url": f"{r}/pulls/{pr.number}/comments",
            "review_comment_url": f"{r}/pulls/comments{{/number}}",
            "comments_url": f"{r}/issues/{pr.number}/comments",
            "statuses_url": f"{r}/statuses/{head_sha}",
            "number": pr.number,
            "state": pr.state,
            "locked": False,
            "title": pr.title,
            "user": self._user(base, pr.user),
            "body": pr.body,
            "labels": [self._label_json(base, n) for n in pr.labels],
            "milestone": None,
            "active_lock_reason": None,
            "created_at": _iso(pr.created_at),
            "updated_at": _iso(pr.updated_at),
            "closed_at": _iso(pr.closed_at) if pr.closed_at else None,
            "merged_at": _iso(pr.merged_at) if pr.merged_at else None,
            "merge_commit_sha": pr.merge_commit_sha,
            "assignee": None,
            "assignees": [],
            "requested_reviewers": [],
            "requested_teams": [],
            "head": {
                "label": f"{self.owner}:{pr.head}",
                "ref": pr.head,
                "sha": head_sha,
                "user": self._user(base, self.owner),
                "repo": repo_json,
            },
            "base": {
                "label": f"{self.owner}:{pr.base}",
                "ref": pr.base,
                "sha": base_sha,
                "user": self._user(base, self.owner),
                "repo": repo_json,
            },
            "_links": {
                "self": {"href": f"{r}/pulls/{pr.number}"},
                "html": {"href": web_pr},
                "issue": {"href": f"{r}/issues/{pr.number}"},
            },
            "author_association": "NONE",
            "auto_merge": None,
            "draft": pr.draft,
            "merged": pr.merged,
            "mergeable": mergeable,
            "rebaseable": mergeable,
            "mergeable_state": mergeable_state,
            "merged_by": self._user(base, pr.merged_by) if pr.merged_by else None,
            "comments": len(pr.comments),
            "review_comments": 0,
            "maintainer_can_modify": False,
            "commits": 1,
            "additions": 0,
            "deletions": 0,
            "changed_files": len(files),
        }

    def _review_json(self, base: str, pr: Pull, review: Review) -> dict[str, Any]:
        r = f"{base}/repos/{self.full_name}"
        return {
            "id": review.id,
            "node_id": f"PRR_{review.id}",
            "user": self._user(base, review.user),
            "body": review.body,
            "state": review.state,
            "html_url": f"{self._web(base)}/{self.full_name}/pull/{pr.number}#pullrequestreview-{review.id}",
            "pull_request_url": f"{r}/pulls/{pr.number}",
            "submitted_at": _iso(review.submitted_at),
            "commit_id": review.commit_id,
            "author_association": "MEMBER",
        }

    # ---------------------------------------------------------------- rules

    def _approvals(self, pr: Pull) -> int:
        latest: dict[str, str] = {}
        for review in pr.reviews:
            if review.user != pr.user and review.state in ("APPROVED", "CHANGES_REQUESTED", "DISMISSED"):
                latest[review.user] = review.state
        return sum(1 for s in latest.values() if s == "APPROVED")

    def _blocked_by(self, pr: Pull) -> str | None:
        rule = self.protection.get(pr.base)
        if rule is None:
            return None
        need = rule.required_approving_review_count
        if need and self._approvals(pr) < need:
            plural = "review is" if need == 1 else "reviews are"
            return f"At least {need} approving {plural} required by reviewers with write access."
        statuses = self.statuses.get(self._head_sha(pr), {})
        for context in rule.required_status_checks:
            state = statuses.get(context)
            if state is None or state == "pending":
                return f'Required status check "{context}" is expected.'
            if state != "success":
                return f'Required status check "{context}" is failing.'
        return None

    def _merge(
        self,
        pr: Pull,
        method: str,
        sha: str | None,
        title: str | None,
        message: str | None,
        user: str,
    ) -> str:
        if pr.state != "open":
            raise HttpError(405, {"message": "Pull Request is not mergeable", "documentation_url": DOCS})
        head_sha = self._head_sha(pr)
        if sha is not None and sha != head_sha:
            raise HttpError(
                409,
                {
                    "message": "Head branch was modified. Review and try the merge again.",
                    "documentation_url": DOCS,
                },
            )
        if method not in ("merge", "squash", "rebase"):
            raise _validation(resource="PullRequest", field="merge_method", code="invalid")
        if method not in self.allowed_merge_methods:
            words = {"merge": "Merge commits", "squash": "Squash merges", "rebase": "Rebase merges"}[method]
            raise HttpError(
                405, {"message": f"{words} are not allowed on this repository.", "documentation_url": DOCS}
            )
        blocked = self._blocked_by(pr)
        if blocked:
            raise HttpError(
                405,
                {
                    "message": blocked,
                    "documentation_url": "https://docs.github.com/articles/about-protected-branches",
                },
            )
        base_sha = self.repo.branch_sha(pr.base)
        if base_sha is None:
            raise HttpError(405, {"message": "Base branch was deleted", "documentation_url": DOCS})
        tree = self.repo.merge_tree(base_sha, head_sha)
        if tree is None:
            raise HttpError(405, {"message": "Pull Request is not mergeable", "documentation_url": DOCS})
        if method == "merge":
            subject = title or f"Merge pull request #{pr.number} from {self.owner}/{pr.head}"
            body = pr.title if message is None else message
            new = self.repo.commit_tree(tree, [base_sha, head_sha], f"{subject}\n\n{body}\n".rstrip() + "\n")
        elif method == "squash":
            subject = title or f"{pr.title} (#{pr.number})"
            body = message or ""
            new = self.repo.commit_tree(tree, [base_sha], f"{subject}\n\n{body}".rstrip() + "\n")
        else:  # rebase: the double supports a single-commit head only, which is what opsbot makes
            info = self.repo.read_commit(head_sha)
            new = self.repo.commit_tree(tree, [base_sha], info["message"])
        self.repo.update_ref(f"refs/heads/{pr.base}", new, base_sha)
        now = self.clock()
        pr.head_sha = head_sha
        pr.state, pr.merged, pr.merged_at, pr.closed_at = "closed", True, now, now
        pr.merged_by, pr.merge_commit_sha, pr.updated_at = user, new, now
        number = pr.number
        self._emit("pull_request", lambda base: self.pull_request_payload(base, number, "closed"))
        self._emit_push(pr.base, base_sha, new, user)
        return new

    # ---------------------------------------------------------------- HTTP plumbing

    def app(self) -> web.Application:
        application = web.Application(client_max_size=64 * 1024 * 1024)
        application.router.add_route("*", "/{tail:.*}", self._dispatch)
        return application

    def _base_url(self, request: web.Request) -> str:
        return f"{request.scheme}://{request.host}{self.base_path}"

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.count > 0 and fault.matches(method, path):
                    fault.count -= 1
                    return fault
            self.faults = [f for f in self.faults if f.count > 0]
        return None

    def _rate_headers(self) -> dict[str, str]:
        reset = int(self.clock()) + 3600
        return {
            "X-RateLimit-Limit": "5000",
            "X-RateLimit-Remaining": str(self._rate_remaining),
            "X-RateLimit-Used": str(5000 - self._rate_remaining),
            "X-RateLimit-Reset": str(reset),
            "X-RateLimit-Resource": "core",
        }

    @staticmethod
    def _fault_response(fault: Fault, clock: Callable[[], float]) -> web.Response:
        if fault.kind == "secondary":
            return web.json_response(
                {"message": SECONDARY_RATE_LIMIT_MESSAGE, "documentation_url": DOCS},
                status=403,
                headers={"Retry-After": str(int(fault.seconds))},
            )
        if fault.kind == "primary":
            return web.json_response(
                {"message": "API rate limit exceeded for installation ID 4242.", "documentation_url": DOCS},
                status=403,
                headers={
                    "X-RateLimit-Limit": "5000",
                    "X-RateLimit-Remaining": "0",
                    "X-RateLimit-Used": "5000",
                    "X-RateLimit-Reset": str(int(clock() + fault.seconds)),
                    "X-RateLimit-Resource": "core",
                },
            )
        if fault.kind == "429":
            return web.json_response(
                {"message": SECONDARY_RATE_LIMIT_MESSAGE, "documentation_url": DOCS},
                status=429,
                headers={"Retry-After": str(int(fault.seconds))},
            )
        if fault.kind == "403":
            return web.json_response(
                {
                    "message": "Resource not accessible by integration",
                    "documentation_url": f"{DOCS}/pulls/pulls#create-a-pull-request",
                    "status": "403",
                },
                status=403,
            )
        if fault.kind == "500":
            return web.json_response({"message": "Server Error"}, status=500)
        if fault.kind == "502":
            return web.Response(
                status=502,
                text="<html><body><h1>502 Bad Gateway</h1>Server temporarily unavailable.</body></html>",
                content_type="text/html",
            )
        raise ValueError(f"unknown fault kind {fault.kind}")

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if re.match(rf"^/{re.escape(self.full_name)}\.git(/|$)", path) or re.match(
            r"^/[^/]+/[^/]+\.git(/|$)", path
        ):
            return await self._git_http(request)
        if not path.startswith(self.base_path + "/") and self.base_path:
            return web.json_response({"message": "Not Found", "documentation_url": DOCS}, status=404)
        sub = path[len(self.base_path) :]
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            return web.json_response(
                {"message": "Problems parsing JSON", "documentation_url": DOCS}, status=400
            )
        kind = "app" if sub.startswith("/app/") else "api"
        with self.lock:
            self.requests.append(Recorded(request.method, sub, dict(request.query), body, kind))
        fault = self._take_fault(request.method, sub)
        if fault is not None and fault.kind != "delay":
            return self._fault_response(fault, self.clock)
        if fault is not None and not fault.after:
            await asyncio.sleep(fault.seconds)
        try:
            if kind == "app":
                status, payload = await asyncio.to_thread(self._app_route, request, sub, body)
            else:
                self._authenticate(request)
                status, payload = await asyncio.to_thread(self._route, request, sub, body)
            if status == 204:
                response = web.Response(status=204, headers=self._rate_headers())
            else:
                response = web.json_response(payload, status=status, headers=self._rate_headers())
        except HttpError as exc:
            response = web.json_response(
                exc.body, status=exc.status, headers={**self._rate_headers(), **exc.headers}
            )
        if fault is not None and fault.after:
            await asyncio.sleep(fault.seconds)
        return response

    def _token_ok(self, value: str) -> bool:
        with self.lock:
            tok = self.tokens.get(value)
            if tok is None or tok.revoked:
                return False
            return tok.expires_at is None or self.clock() < tok.expires_at

    def _authenticate(self, request: web.Request) -> None:
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if not header:
            raise HttpError(401, {"message": "Requires authentication", "documentation_url": DOCS})
        if scheme.lower() not in ("token", "bearer") or not self._token_ok(value.strip()):
            raise HttpError(401, {"message": "Bad credentials", "documentation_url": DOCS})

    # ---------------------------------------------------------------- App tokens

    def _app_route(self, request: web.Request, sub: str, body: Any) -> tuple[int, Any]:
        m = re.fullmatch(r"/app/installations/(\d+)/access_tokens", sub)
        if not m or request.method != "POST":
            raise _not_found()
        header = request.headers.get("Authorization", "")
        scheme, _, jwt_value = header.partition(" ")
        if scheme.lower() != "bearer" or not self.app_public_key:
            raise HttpError(
                401, {"message": "A JSON web token could not be decoded", "documentation_url": DOCS}
            )
        import jwt  # PyJWT, a PyGithub dependency

        try:
            claims = jwt.decode(
                jwt_value.strip(),
                self.app_public_key,
                algorithms=["RS256"],
                options={"require": ["iat", "exp", "iss"]},
                leeway=60,
            )
        except jwt.PyJWTError as exc:
            raise HttpError(
                401, {"message": f"A JSON web token could not be decoded ({exc})", "documentation_url": DOCS}
            ) from None
        if str(claims.get("iss")) != str(self.app_id):
            raise HttpError(
                401, {"message": "'Issuer' claim ('iss') must be an Integer", "documentation_url": DOCS}
            )
        if claims["exp"] - claims["iat"] > 600 + 60:
            raise HttpError(
                401,
                {
                    "message": "'Expiration time' claim ('exp') is too far in the future",
                    "documentation_url": DOCS,
                },
            )
        if int(m[1]) != self.installation_id:
            raise _not_found()
        value = "ghs_" + uuid.uuid4().hex
        expires = self.clock() + self.installation_token_ttl
        with self.lock:
            self.tokens[value] = _Token(value, expires)
            self.issued_tokens.append(value)
        return 201, {
            "token": value,
            "expires_at": _iso(expires),
            "permissions": {
                "contents": "write",
                "pull_requests": "write",
                "issues": "write",
                "metadata": "read",
            },
            "repository_selection": "selected",
        }

    # ---------------------------------------------------------------- REST routes

    def _route(self, request: web.Request, sub: str, body: Any) -> tuple[int, Any]:
        base = self._base_url(request)
        prefix = f"/repos/{self.full_name}"
        m = re.match(r"^/repos/([^/]+)/([^/]+)(/.*)?$", sub)
        if not m or f"/repos/{m[1]}/{m[2]}" != prefix:
            raise _not_found()
        rest = m[3] or ""
        method = request.method
        body = body if body is not None else {}
        with self.lock:
            if rest == "" and method == "GET":
                return 200, self._repo_json(base)
            if rest.startswith("/git/"):
                return self._git_data(base, method, rest[len("/git/") :], body)
            if rest == "/pulls" and method == "POST":
                return self._create_pull(base, body)
            if rest == "/pulls" and method == "GET":
                return self._list_pulls(base, dict(request.query))
            pm = re.fullmatch(r"/pulls/(\d+)(/merge|/reviews)?", rest)
            if pm:
                pr = self.pulls.get(int(pm[1]))
                if pr is None:
                    raise _not_found()
                if pm[2] is None and method == "GET":
                    return 200, self.pull_json(base, pr)
                if pm[2] is None and method == "PATCH":
                    return self._edit_pull(base, pr, body)
                if pm[2] == "/merge" and method == "PUT":
                    sha = self._merge(
                        pr,
                        body.get("merge_method", "merge"),
                        body.get("sha"),
                        body.get("commit_title"),
                        body.get("commit_message"),
                        self.bot_login,
                    )
                    return 200, {"sha": sha, "merged": True, "message": "Pull Request successfully merged"}
                if pm[2] == "/merge" and method == "GET":
                    if pr.merged:
                        return 204, None
                    raise _not_found()
                if pm[2] == "/reviews" and method == "GET":
                    return 200, [self._review_json(base, pr, r) for r in pr.reviews]
            im = re.fullmatch(r"/issues/(\d+)/(comments|labels)", rest)
            if im and method == "POST":
                pr = self.pulls.get(int(im[1]))
                if pr is None:
                    raise _not_found()
                if im[2] == "comments":
                    return self._comment(base, pr, body)
                names = body.get("labels", []) if isinstance(body, dict) else body
                if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                    raise _validation(resource="Label", field="labels", code="invalid")
                for n in names:
                    if n not in pr.labels:
                        pr.labels.append(n)
                return 200, [self._label_json(base, n) for n in pr.labels]
            sm = re.fullmatch(r"/statuses/([^/]+)", rest)
            if sm and method == "POST":
                return self._create_status(base, sm[1], body)
            cm = re.fullmatch(r"/commits/([^/]+)/statuses", rest)
            if cm and method == "GET":
                sha = self.repo.rev(cm[1])
                if sha is None:
                    raise _validation(f"No commit found for SHA: {cm[1]}")
                return 200, [
                    {k: v for k, v in s.items() if k != "_sha"} for s in reversed(self.status_log) if s["_sha"] == sha
                ]
        raise _not_found()

    def _create_status(self, base: str, sha: str, body: Any) -> tuple[int, Any]:
        """`POST /repos/{o}/{r}/statuses/{sha}` as GitHub answers it: 422 for an unknown commit, a
        bad state, a description over 140 characters or a target_url that is not http(s)."""
        if not isinstance(body, dict):
            raise HttpError(400, {"message": "Problems parsing JSON", "documentation_url": DOCS})
        if not re.fullmatch(r"[0-9a-f]{40}", sha) or self.repo.object_type(sha) != "commit":
            raise _validation(f"No commit found for SHA: {sha}")
        state = body.get("state")
        if state not in ("error", "failure", "pending", "success"):
            raise _validation(resource="Status", field="state", code="invalid")
        description = body.get("description")
        if description is not None and (not isinstance(description, str) or len(description) > 140):
            raise _validation(
                resource="Status", field="description", code="custom",
                message="description is too long (maximum is 140 characters)",
            )  # fmt: skip
        target_url = body.get("target_url")
        if target_url is not None and not (
            isinstance(target_url, str) and re.match(r"https?://", target_url)
        ):
            raise _validation(resource="Status", field="target_url", code="custom", message="target_url is invalid")
        context = body.get("context") or "default"
        self.set_status(sha, context, state)
        now = _iso(self.clock())
        record = {
            "url": f"{base}/repos/{self.full_name}/statuses/{sha}",
            "id": next(self._ids),
            "node_id": f"SC_{sha[:8]}",
            "state": state,
            "description": description,
            "target_url": target_url,
            "context": context,
            "created_at": now,
            "updated_at": now,
            "creator": self._user(base, self.bot_login),
        }
        self.status_log.append({**record, "_sha": sha})
        return 201, record

    def _git_data(self, base: str, method: str, rest: str, body: dict[str, Any]) -> tuple[int, Any]:
        if method == "GET" and rest.startswith("ref/"):
            ref = "refs/" + rest[len("ref/") :]
            sha = self.repo.rev(ref) if rest.startswith("ref/heads/") else None
            if sha is None:
                raise _not_found()
            return 200, self._ref_json(base, ref, sha)
        cm = re.fullmatch(r"commits/([0-9a-f]{4,40})", rest)
        if cm and method == "GET":
            if self.repo.object_type(cm[1]) != "commit":
                raise _not_found()
            return 200, self._commit_json(base, self.repo.rev(cm[1]) or cm[1])
        tm = re.fullmatch(r"trees/([0-9a-f]{4,40})", rest)
        if tm and method == "GET":
            if self.repo.object_type(tm[1]) != "tree":
                raise _not_found()
            return 200, self._tree_json(base, tm[1])
        if rest == "trees" and method == "POST":
            return self._create_tree(base, body)
        if rest == "blobs" and method == "POST":
            content = body.get("content")
            if not isinstance(content, str):
                raise _validation(resource="Blob", field="content", code="missing_field")
            raw = base64.b64decode(content) if body.get("encoding") == "base64" else content.encode()
            sha = self.repo.hash_blob(raw)
            return 201, {"sha": sha, "url": f"{base}/repos/{self.full_name}/git/blobs/{sha}"}
        if rest == "commits" and method == "POST":
            return self._create_commit(base, body)
        if rest == "refs" and method == "POST":
            return self._create_ref(base, body)
        rm = re.fullmatch(r"refs/(heads/.+)", rest)
        if rm and method == "PATCH":
            return self._update_ref(base, "refs/" + rm[1], body)
        if rm and method == "DELETE":
            ref = "refs/" + rm[1]
            if self.repo.rev(ref) is None:
                raise _validation("Reference does not exist")
            self.repo.delete_ref(ref)
            return 204, None
        raise _not_found()

    def _create_tree(self, base: str, body: dict[str, Any]) -> tuple[int, Any]:
        items = body.get("tree")
        if not isinstance(items, list):
            raise _validation(resource="Tree", field="tree", code="missing_field")
        base_tree = body.get("base_tree")
        if base_tree is not None and self.repo.object_type(str(base_tree)) != "tree":
            raise _validation("base_tree is not a valid tree oid")
        entries: list[tuple[str, str, str | None]] = []
        for item in items:
            if not isinstance(item, dict) or not isinstance(item.get("path"), str) or not item["path"]:
                raise _validation(resource="Tree", field="path", code="missing_field")
            mode, kind = item.get("mode"), item.get("type")
            if mode not in ("100644", "100755", "120000") or kind != "blob":
                raise _validation(f"tree.mode {mode!r} / tree.type {kind!r} are not supported by the double")
            has_content, has_sha = "content" in item, "sha" in item
            if has_content and has_sha:
                raise _validation("Must supply either tree.sha or tree.content, not both")
            if has_content:
                entries.append((item["path"], mode, self.repo.hash_blob(str(item["content"]).encode())))
            elif has_sha and item["sha"] is None:
                if base_tree is None:
                    raise _validation("GitRPC::BadObjectState")
                entries.append((item["path"], mode, None))
            elif has_sha:
                if self.repo.object_type(str(item["sha"])) != "blob":
                    raise _validation(f"tree.sha {item['sha']} is not a valid blob")
                entries.append((item["path"], mode, str(item["sha"])))
            else:
                raise _validation("Must supply either tree.sha or tree.content")
        try:
            sha = self.repo.write_tree(base_tree, entries)
        except GitError:
            raise _validation("GitRPC::BadObjectState") from None
        return 201, self._tree_json(base, sha)

    def _create_commit(self, base: str, body: dict[str, Any]) -> tuple[int, Any]:
        message, tree, parents = body.get("message"), body.get("tree"), body.get("parents", [])
        if not isinstance(message, str):
            raise _validation(resource="Commit", field="message", code="missing_field")
        if not isinstance(tree, str) or self.repo.object_type(tree) != "tree":
            raise _validation("Tree SHA does not exist")
        if not isinstance(parents, list):
            raise _validation(resource="Commit", field="parents", code="invalid")
        for p in parents:
            if not isinstance(p, str) or self.repo.object_type(p) != "commit":
                raise _validation("Parent SHA does not exist or is not a commit object")
        sha = self.repo.commit_tree(tree, parents, message, body.get("author"))
        return 201, self._commit_json(base, sha)

    def _create_ref(self, base: str, body: dict[str, Any]) -> tuple[int, Any]:
        ref, sha = body.get("ref"), body.get("sha")
        if not isinstance(ref, str) or not ref.startswith("refs/") or ref.count("/") < 2:
            raise _validation("Reference name is invalid")
        if not isinstance(sha, str) or self.repo.object_type(sha) is None:
            raise _validation("Object does not exist")
        if self.repo.rev(ref) is not None:
            raise _validation("Reference already exists")
        try:
            self.repo.update_ref(ref, sha, ZERO_SHA)
        except GitError:
            raise _validation("Reference already exists") from None
        if ref.startswith("refs/heads/"):
            self._emit_push(ref[len("refs/heads/") :], ZERO_SHA, sha, self.bot_login)
        return 201, self._ref_json(base, ref, sha)

    def _update_ref(self, base: str, ref: str, body: dict[str, Any]) -> tuple[int, Any]:
        sha, force = body.get("sha"), bool(body.get("force", False))
        old = self.repo.rev(ref)
        if old is None:
            raise _validation("Reference does not exist")
        if not isinstance(sha, str) or self.repo.object_type(sha) != "commit":
            raise _validation("Object does not exist")
        if not force and not self.repo.is_ancestor(old, sha):
            raise _validation("Update is not a fast forward")
        self.repo.update_ref(ref, sha, old)
        self._emit_push(ref[len("refs/heads/") :], old, sha, self.bot_login)
        return 200, self._ref_json(base, ref, sha)

    def _create_pull(self, base: str, body: dict[str, Any]) -> tuple[int, Any]:
        title, head, base_branch = body.get("title"), body.get("head"), body.get("base")
        if not isinstance(title, str) or not title:
            raise _validation(resource="PullRequest", field="title", code="missing_field")
        if not isinstance(head, str) or not head:
            raise _validation(resource="PullRequest", field="head", code="missing_field")
        if not isinstance(base_branch, str) or not base_branch:
            raise _validation(resource="PullRequest", field="base", code="missing_field")
        head_branch = head.split(":", 1)[1] if ":" in head else head
        if ":" in head and head.split(":", 1)[0] != self.owner:
            raise _validation(resource="PullRequest", field="head", code="invalid")
        head_sha = self.repo.branch_sha(head_branch)
        if head_sha is None:
            raise _validation(resource="PullRequest", field="head", code="invalid")
        base_sha = self.repo.branch_sha(base_branch)
        if base_sha is None:
            raise _validation(resource="PullRequest", field="base", code="invalid")
        for other in self.pulls.values():
            if other.state == "open" and other.head == head_branch and other.base == base_branch:
                raise _validation(
                    resource="PullRequest",
                    code="custom",
                    message=f"A pull request already exists for {self.owner}:{head_branch}.",
                )
        if self.repo.is_ancestor(head_sha, base_sha):
            raise _validation(
                resource="PullRequest",
                code="custom",
                message=f"No commits between {base_branch} and {head_branch}",
            )
        now = self.clock()
        try:
            merge_base = self.repo.git("merge-base", base_sha, head_sha).strip()
        except GitError:
            raise _validation(
                resource="PullRequest",
                code="custom",
                message=f"The {head_branch} branch has no history in common with {base_branch}",
            ) from None
        pr = Pull(
            number=next(self._numbers),
            title=title,
            body=str(body.get("body") or ""),
            head=head_branch,
            base=base_branch,
            user=self.bot_login,
            head_sha=head_sha,
            base_sha=merge_base,
            created_at=now,
            updated_at=now,
            draft=bool(body.get("draft", False)),
        )
        self.pulls[pr.number] = pr
        number = pr.number
        self._emit("pull_request", lambda b: self.pull_request_payload(b, number, "opened"))
        return 201, self.pull_json(base, pr)

    def _list_pulls(self, base: str, query: dict[str, str]) -> tuple[int, Any]:
        state = query.get("state", "open")
        if state not in ("open", "closed", "all"):
            raise _validation(resource="PullRequest", field="state", code="invalid")
        head = query.get("head")
        head_branch = None
        if head:
            owner, _, head_branch = head.partition(":")
            if not head_branch or owner != self.owner:
                return 200, []
        found = [
            p
            for p in sorted(self.pulls.values(), key=lambda p: -p.number)
            if (state == "all" or p.state == state)
            and (head_branch is None or p.head == head_branch)
            and ("base" not in query or p.base == query["base"])
        ]
        per_page = max(1, min(100, int(query.get("per_page", "30"))))
        page = max(1, int(query.get("page", "1")))
        return 200, [self.pull_json(base, p) for p in found[(page - 1) * per_page : page * per_page]]

    def _edit_pull(self, base: str, pr: Pull, body: dict[str, Any]) -> tuple[int, Any]:
        if "title" in body:
            pr.title = str(body["title"])
        if "body" in body:
            pr.body = str(body["body"])
        state = body.get("state")
        if state == "closed" and pr.state == "open":
            pr.head_sha = self._head_sha(pr)
            pr.state, pr.closed_at, pr.closed_by = "closed", self.clock(), self.bot_login
            number = pr.number
            self._emit("pull_request", lambda b: self.pull_request_payload(b, number, "closed"))
        elif state == "open" and pr.state == "closed" and not pr.merged:
            for other in self.pulls.values():
                if other.state == "open" and other.head == pr.head and other.base == pr.base:
                    raise _validation(
                        resource="PullRequest",
                        code="custom",
                        message=f"A pull request already exists for {self.owner}:{pr.head}.",
                    )
            pr.state, pr.closed_at = "open", None
        elif state not in (None, "open", "closed"):
            raise _validation(resource="PullRequest", field="state", code="invalid")
        pr.updated_at = self.clock()
        return 200, self.pull_json(base, pr)

    def _comment(self, base: str, pr: Pull, body: dict[str, Any]) -> tuple[int, Any]:
        text = body.get("body")
        if not isinstance(text, str) or not text:
            raise _validation(resource="IssueComment", field="body", code="missing_field")
        cid = next(self._ids)
        r = f"{base}/repos/{self.full_name}"
        comment = {
            "id": cid,
            "node_id": f"IC_{cid}",
            "url": f"{r}/issues/comments/{cid}",
            "html_url": f"{self._web(base)}/{self.full_name}/pull/{pr.number}#issuecomment-{cid}",
            "body": text,
            "user": self._user(base, self.bot_login),
            "created_at": _iso(self.clock()),
            "updated_at": _iso(self.clock()),
            "issue_url": f"{r}/issues/{pr.number}",
            "author_association": "NONE",
        }
        pr.comments.append(comment)
        return 201, comment

    # ---------------------------------------------------------------- Git smart HTTP

    async def _git_http(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        with self.lock:
            self.requests.append(Recorded(request.method, request.path, dict(request.query), None, "git"))
        fault = self._take_fault(request.method, request.path)
        if fault is not None and fault.kind == "delay":
            await asyncio.sleep(fault.seconds)
        elif fault is not None:
            return self._fault_response(fault, self.clock)
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        ok = False
        user = ""
        if scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(value.strip()).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                password = ""
            ok = self._token_ok(password)
        if not ok:
            return web.Response(
                status=401,
                text="remote: Invalid username or token. Password authentication is not supported.\n",
                headers={"WWW-Authenticate": 'Basic realm="GitHub"'},
            )
        m = re.match(r"^/([^/]+)/([^/]+?)(\.git)?(/.*)?$", request.path)
        if not m or f"{m[1]}/{m[2]}" != self.full_name:
            return web.Response(status=404, text="Repository not found.\n")
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": str(self.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "PATH_INFO": f"/{self.full_name}.git{m[4] or ''}",
            "REQUEST_METHOD": request.method,
            "QUERY_STRING": request.query_string,
            "CONTENT_TYPE": request.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(raw)),
            "REMOTE_USER": user or "x-access-token",
            "REMOTE_ADDR": request.remote or "127.0.0.1",
            "GIT_CONFIG_NOSYSTEM": "1",
            "HOME": str(self.root),
        }
        # aiohttp has already inflated a gzip body (git gzips big negotiations, e.g. a fetch with
        # many branches): handing http-backend the header too would make it inflate plain bytes.
        if request.headers.get("Content-Encoding") and raw[:2] == b"\x1f\x8b":
            env["HTTP_CONTENT_ENCODING"] = request.headers["Content-Encoding"]
        if request.headers.get("Git-Protocol"):
            env["GIT_PROTOCOL"] = request.headers["Git-Protocol"]
        proc = await asyncio.create_subprocess_exec(
            "git",
            "http-backend",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        out, _err = await proc.communicate(raw)
        head, sep, payload = out.partition(b"\r\n\r\n")
        if not sep:
            head, _, payload = out.partition(b"\n\n")
        status = 200
        headers: dict[str, str] = {}
        for line in head.decode(errors="replace").splitlines():
            key, _, val = line.partition(":")
            if key.lower() == "status":
                status = int(val.strip().split()[0])
            elif key:
                headers[key.strip()] = val.strip()
        return web.Response(status=status, body=payload, headers=headers)

    # ---------------------------------------------------------------- webhooks

    def pull_request_payload(
        self, base: str, number: int, action: str, sender: str | None = None
    ) -> dict[str, Any]:
        with self.lock:
            pr = self.pulls[number]
            pr_json = self.pull_json(base, pr)
            who = sender or (pr.merged_by if pr.merged else pr.closed_by) or pr.user
            payload: dict[str, Any] = {
                "action": action,
                "number": number,
                "pull_request": pr_json,
                "repository": self._repo_json(base),
                "organization": {"login": self.owner, "id": self._user(base, self.owner)["id"]},
                "sender": self._user(base, who),
            }
            if self.app_id:
                payload["installation"] = {"id": self.installation_id, "node_id": f"I_{self.installation_id}"}
            return payload

    def review_payload(self, base: str, number: int, review_id: int | None = None) -> dict[str, Any]:
        with self.lock:
            pr = self.pulls[number]
            review = next((r for r in pr.reviews if r.id == review_id), pr.reviews[-1])
            review_json = self._review_json(base, pr, review)
            # webhooks spell the review state in lower case, unlike the REST API
            review_json["state"] = review.state.lower()
            review_json["_links"] = {
                "html": {"href": review_json["html_url"]},
                "pull_request": {"href": review_json["pull_request_url"]},
            }
            payload = {
                "action": "submitted",
                "review": review_json,
                "pull_request": self.pull_json(base, pr),
                "repository": self._repo_json(base),
                "sender": self._user(base, review.user),
            }
            if self.app_id:
                payload["installation"] = {"id": self.installation_id, "node_id": f"I_{self.installation_id}"}
            return payload

    def push_payload(
        self, base: str, branch: str, before: str, after: str, pusher: str = "alice"
    ) -> dict[str, Any]:
        with self.lock:
            web_root = self._web(base)
            commits = []
            if after != ZERO_SHA:
                revs = f"{before}..{after}" if before != ZERO_SHA else after
                for sha in self.repo.git("rev-list", "--reverse", revs).split():
                    info = self.repo.read_commit(sha)
                    commits.append(
                        {
                            "id": sha,
                            "tree_id": info["tree"],
                            "distinct": True,
                            "message": info["message"].rstrip("\n"),
                            "timestamp": info["committer"]["date"],
                            "url": f"{web_root}/{self.full_name}/commit/{sha}",
                            "author": {**info["author"], "username": pusher},
                            "committer": {**info["committer"], "username": pusher},
                            "added": [],
                            "removed": [],
                            "modified": self.repo.changed_files(sha + "^", sha) if info["parents"] else [],
                        }
                    )
            return {
                "ref": f"refs/heads/{branch}",
                "before": before,
                "after": after,
                "created": before == ZERO_SHA,
                "deleted": after == ZERO_SHA,
                "forced": False,
                "base_ref": None,
                "compare": f"{web_root}/{self.full_name}/compare/{before[:12]}...{after[:12]}",
                "commits": commits,
                "head_commit": commits[-1] if commits else None,
                "repository": self._repo_json(base),
                "pusher": {"name": pusher, "email": f"{pusher}@example.com"},
                "sender": self._user(base, pusher),
            }

    @staticmethod
    def sign(secret: str, body: bytes) -> str:
        return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()

    def webhook_request(
        self, event: str, payload: dict[str, Any], secret: str, delivery: str | None = None
    ) -> tuple[dict[str, str], bytes]:
        """Headers and raw body exactly as GitHub's hookshot sends them."""
        body = json.dumps(payload, separators=(",", ":")).encode()
        delivery = delivery or str(uuid.uuid4())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "GitHub-Hookshot/double",
            "X-GitHub-Event": event,
            "X-GitHub-Delivery": delivery,
            "X-GitHub-Hook-ID": "424242",
            "X-GitHub-Hook-Installation-Target-ID": "1296269",
            "X-GitHub-Hook-Installation-Target-Type": "repository",
            "X-Hub-Signature": "sha1=" + hmac.new(secret.encode(), body, hashlib.sha1).hexdigest(),
            "X-Hub-Signature-256": self.sign(secret, body),
        }
        with self.lock:
            self.deliveries.append({"event": event, "delivery": delivery, "payload": payload})
        return headers, body

    def send_webhook(
        self, url: str, event: str, payload: dict[str, Any], secret: str, delivery: str | None = None
    ) -> tuple[int, bytes]:
        """Deliver synchronously (call it from a thread other than the receiver's event loop)."""
        if not url.startswith("http://127.0.0.1"):
            raise ValueError("the double only delivers to 127.0.0.1")
        headers, body = self.webhook_request(event, payload, secret, delivery)
        req = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    async def send_webhook_async(
        self, url: str, event: str, payload: dict[str, Any], secret: str, delivery: str | None = None
    ) -> tuple[int, bytes]:
        """Deliver from inside an event loop (the receiver may be an in-loop test server)."""
        import aiohttp

        if not url.startswith("http://127.0.0.1"):
            raise ValueError("the double only delivers to 127.0.0.1")
        headers, body = self.webhook_request(event, payload, secret, delivery)
        async with aiohttp.ClientSession() as session, session.post(url, data=body, headers=headers) as resp:
            return resp.status, await resp.read()


# ------------------------------------------------------------------------------------------- serving


@dataclass
class RunningDouble:
    double: GitHubDouble
    url: str  # http://127.0.0.1:PORT (no base path)

    @property
    def api_url(self) -> str:
        return self.url + self.double.base_path

    @property
    def git_url(self) -> str:
        return f"{self.url}/{self.double.full_name}.git"

    # payloads whose URLs point at this server (what a receiver would follow back)
    def pull_request_payload(self, number: int, action: str, sender: str | None = None) -> dict[str, Any]:
        return self.double.pull_request_payload(self.api_url, number, action, sender)

    def review_payload(self, number: int, review_id: int | None = None) -> dict[str, Any]:
        return self.double.review_payload(self.api_url, number, review_id)

    def push_payload(self, branch: str, before: str, after: str, pusher: str = "alice") -> dict[str, Any]:
        return self.double.push_payload(self.api_url, branch, before, after, pusher)


@contextlib.contextmanager
def serve_in_thread(double: GitHubDouble) -> Iterator[RunningDouble]:
    """Run the double on 127.0.0.1:<free port> in its own thread and event loop.

    Why a thread: PyGithub and `git` are blocking clients; a server in another thread lets a
    plain synchronous test call them directly.
    """
    with serve_app_in_thread(double.app(), name="github-double") as served:
        running = RunningDouble(double, served.url)
        double.public_api_url = running.api_url
        yield running


async def serve_in_loop(
    double: GitHubDouble, aiohttp_server: Callable[[web.Application], Awaitable[Any]]
) -> RunningDouble:
    """Run the double on the test's own loop via pytest-aiohttp's `aiohttp_server` fixture.

    Blocking clients (PyGithub) must then be called through `asyncio.to_thread`.
    """
    server = await aiohttp_server(double.app())
    running = RunningDouble(double, f"http://127.0.0.1:{server.port}")
    double.public_api_url = running.api_url
    return running


def make_app_keypair() -> tuple[str, str]:
    """A fresh RSA key pair (private PEM, public PEM) for GitHub App auth tests."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public
