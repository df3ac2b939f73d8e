"""The embedded forge: PRs as branches in the manifest repo itself, merged with real `git merge`.

It needs no credentials, so a newcomer (and every test) gets the whole flow — branch, one commit,
review, merge — on a plain local repository. Commits are built with plumbing on a private index,
so the work tree and whatever is checked out are never touched until a merge lands on the branch
that is checked out.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from opsbot.core.model import Change, PullRequest
from opsbot.core.ports import STATUS_STATES
from opsbot.errors import CommandError, HeadChanged, MergeConflict
from opsbot.manifests.gitrepo import GitError, git


class LocalForge:
    name = "local"

    def __init__(self, repo: str) -> None:
        self.path = os.path.abspath(repo)
        git_dir = git(self.path, "rev-parse", "--absolute-git-dir").strip()
        self.state = Path(git_dir) / "opsbot"
        self.state.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.state / "forge.db", check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(
            """
            CREATE TABLE IF NOT EXISTS prs (
              number INTEGER PRIMARY KEY AUTOINCREMENT, branch TEXT NOT NULL, base TEXT NOT NULL,
              head_sha TEXT NOT NULL, state TEXT NOT NULL, title TEXT NOT NULL, body TEXT NOT NULL,
              labels TEXT NOT NULL DEFAULT '', merge_sha TEXT NOT NULL DEFAULT '', created_at TEXT NOT NULL);
            CREATE UNIQUE INDEX IF NOT EXISTS prs_open_branch ON prs(branch) WHERE state = 'open';
            CREATE TABLE IF NOT EXISTS comments (
              pr INTEGER NOT NULL, body TEXT NOT NULL, created_at TEXT NOT NULL);
            CREATE TABLE IF NOT EXISTS statuses (
              sha TEXT NOT NULL, context TEXT NOT NULL, state TEXT NOT NULL, description TEXT NOT NULL,
              target_url TEXT NOT NULL, created_at TEXT NOT NULL);
            """
        )
        self._lock = threading.Lock()

    # ------------------------------------------------------------------------------ reading
    def repo_path(self) -> str:
        return self.path

    def refresh(self) -> None:
        """The local repo is its own remote: nothing to fetch."""

    def url(self, number: int) -> str:
        return f"file://{self.path}#pr-{number}"

    def _row(self, where: str, *params: object) -> PullRequest | None:
        row = self._db.execute(
            f"SELECT number, branch, base, head_sha, state, title, merge_sha FROM prs WHERE {where}", params
        ).fetchone()
        if row is None:
            return None
        return PullRequest(
            number=row[0],
            url=self.url(row[0]),
            branch=row[1],
            base_branch=row[2],
            head_sha=row[3],
            state=row[4],
            title=row[5],
            merge_sha=row[6],
            created=False,
        )

    def get_pr(self, number: int) -> PullRequest:
        pr = self._row("number = ?", number)
        if pr is None:
            raise CommandError(f"No PR #{number} in the local forge. `opsbot prs` lists them.")
        return self._live(pr)

    def _live(self, pr: PullRequest) -> PullRequest:
        """An open PR's head is its branch as it is now: anyone may have pushed to it since."""
        if pr.state != "open":
            return pr
        try:
            head = git(self.path, "rev-parse", "--verify", "-q", f"refs/heads/{pr.branch}^{{commit}}").strip()
        except GitError:
            return pr
        if not head or head == pr.head_sha:
            return pr
        author = git(self.path, "log", "-1", "--format=%an", head).strip()
        return replace(pr, head_sha=head, head_author=author)

    def find_open_pr(self, branch: str) -> PullRequest | None:
        pr = self._row("branch = ? AND state = 'open'", branch)
        return None if pr is None else self._live(pr)

    def list_prs(self, state: str = "open") -> list[PullRequest]:
        rows = self._db.execute(
            "SELECT number FROM prs WHERE (? = 'all' OR state = ?) ORDER BY number", (state, state)
        ).fetchall()
        return [self.get_pr(r[0]) for r in rows]

    def comments(self, number: int) -> list[str]:
        return [
            r[0] for r in self._db.execute("SELECT body FROM comments WHERE pr = ? ORDER BY rowid", (number,))
        ]

    def statuses(self, sha: str) -> dict[str, tuple[str, str]]:
        """The latest status per context on `sha`: context -> (state, description)."""
        out: dict[str, tuple[str, str]] = {}
        for context, state, description in self._db.execute(
            "SELECT context, state, description FROM statuses WHERE sha = ? ORDER BY rowid", (sha,)
        ):
            out[context] = (state, description)
        return out

    # ------------------------------------------------------------------------------ writing
    def set_status(self, sha: str, context: str, state: str, description: str, target_url: str = "") -> None:
        """Recorded like GitHub keeps them (a new row per call, the latest per context wins)."""
        if state not in STATUS_STATES:
            raise CommandError(f"Commit status state must be one of {', '.join(STATUS_STATES)}, not {state!r}.")
        try:
            kind = git(self.path, "cat-file", "-t", sha).strip() if len(sha) == 40 else ""
        except GitError:
            kind = ""
        if kind != "commit":
            raise CommandError(f"No commit found for SHA: {sha}")
        self._db.execute(
            "INSERT INTO statuses(sha, context, state, description, target_url, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            (sha, context, state, description[:140], target_url, _now()),
        )

    def _commit(self, change: Change, message: str, parent: str) -> str:
        fd, index = tempfile.mkstemp(prefix="opsbot-index-")
        os.close(fd)
        os.unlink(index)
        env = {"GIT_INDEX_FILE": index}
        try:
            git(self.path, "read-tree", parent, env=env)
            for edit in change.edits:
                blob = git(self.path, "hash-object", "-w", "--stdin", input=edit.after.encode()).strip()
                git(self.path, "update-index", "--add", "--cacheinfo", f"100644,{blob},{edit.path}", env=env)
            tree = git(self.path, "write-tree", env=env).strip()
        finally:
            if os.path.exists(index):
                os.unlink(index)
        return git(
            self.path, "commit-tree", tree, "-p", parent, input=message.encode(), env=_identity()
        ).strip()

    def open_pr(
        self, change: Change, branch: str, message: str, body: str, labels: Sequence[str]
    ) -> PullRequest:
        with self._lock:
            existing = self.find_open_pr(branch)
            if existing:
                return existing
            sha = self._commit(change, message, change.base_sha)
            git(self.path, "update-ref", f"refs/heads/{branch}", sha)
            cur = self._db.execute(
                "INSERT INTO prs(branch, base, head_sha, state, title, body, labels, created_at) "
                "VALUES (?, ?, ?, 'open', ?, ?, ?, ?)",
                (branch, change.base_branch, sha, message.splitlines()[0], body, ",".join(labels), _now()),
            )
            assert cur.lastrowid is not None
            pr = self.get_pr(cur.lastrowid)
            return PullRequest(**{**pr.__dict__, "created": True})

    def update_pr(self, number: int, change: Change, message: str) -> PullRequest:
        with self._lock:
            pr = self.get_pr(number)
            sha = self._commit(change, message, change.base_sha)
            git(self.path, "update-ref", f"refs/heads/{pr.branch}", sha)
            self._db.execute("UPDATE prs SET head_sha = ? WHERE number = ?", (sha, number))
            return self.get_pr(number)

    def comment(self, number: int, body: str) -> None:
        self.get_pr(number)
        self._db.execute(
            "INSERT INTO comments(pr, body, created_at) VALUES (?, ?, ?)", (number, body, _now())
        )

    def close_pr(self, number: int, comment: str = "") -> PullRequest:
        with self._lock:
            pr = self.get_pr(number)
            if pr.state == "open":
                if comment:
                    self.comment(number, comment)
                self._db.execute("UPDATE prs SET state = 'closed' WHERE number = ?", (number,))
            return self.get_pr(number)

    def merge_pr(self, number: int, message: str, expected_head: str = "") -> PullRequest:
        """A real merge commit on the base branch (two parents) of exactly `expected_head` when given;
        a typed refusal (HeadChanged, MergeConflict) otherwise."""
        with self._lock:
            pr = self.get_pr(number)
            if pr.state == "merged":
                return pr
            if pr.state != "open":
                raise CommandError(f"PR #{number} is {pr.state}; it cannot be merged.")
            base_sha = git(self.path, "rev-parse", f"refs/heads/{pr.base_branch}").strip()
            head = git(self.path, "rev-parse", f"refs/heads/{pr.branch}").strip()
            if expected_head and head != expected_head:
                raise HeadChanged(
                    f"PR #{number} changed: its branch is at {head[:7]}, not the approved {expected_head[:7]}.",
                    head_sha=head,
                )
            try:
                tree = git(self.path, "merge-tree", "--write-tree", "--no-messages", base_sha, head).split()[
                    0
                ]
            except GitError:
                raise MergeConflict(
                    f"PR #{number} has a conflict with {pr.base_branch}: the base moved and changed the same lines."
                ) from None
            merge = git(
                self.path,
                "commit-tree",
                tree,
                "-p",
                base_sha,
                "-p",
                head,
                input=(message + "\n").encode(),
                env=_identity(),
            ).strip()
            self._advance(pr.base_branch, base_sha, merge)
            self._db.execute(
                "UPDATE prs SET state = 'merged', merge_sha = ? WHERE number = ?", (merge, number)
            )
            return self.get_pr(number)

    def _advance(self, branch: str, old: str, new: str) -> None:
        """Move the base branch; if it is checked out with a clean tree, bring the tree along too."""
        checked_out = ""
        with contextlib.suppress(GitError):  # a detached HEAD has no branch to keep in step
            checked_out = git(self.path, "symbolic-ref", "--short", "HEAD").strip()
        bare = git(self.path, "rev-parse", "--is-bare-repository").strip() == "true"
        if checked_out == branch and not bare:
            if git(self.path, "status", "--porcelain", "--untracked-files=no").strip():
                raise CommandError(
                    f"{branch} is checked out in {self.path} with uncommitted changes; commit or stash them first."
                )
            git(self.path, "update-ref", f"refs/heads/{branch}", new, old)
            git(self.path, "read-tree", "-u", "-m", old, new)
        else:
            git(self.path, "update-ref", f"refs/heads/{branch}", new, old)


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _identity() -> dict[str, str]:
    """Commits made by opsbot say so; the requester goes in the trailers."""
    return {
        "GIT_AUTHOR_NAME": os.environ.get("OPSBOT_GIT_NAME", "opsbot"),
        "GIT_AUTHOR_EMAIL": os.environ.get("OPSBOT_GIT_EMAIL", "opsbot@localhost"),
        "GIT_COMMITTER_NAME": os.environ.get("OPSBOT_GIT_NAME", "opsbot"),
        "GIT_COMMITTER_EMAIL": os.environ.get("OPSBOT_GIT_EMAIL", "opsbot@localhost"),
    }
