"""The GitHub forge: pull requests through PyGithub, reads from a local mirror clone.

This is the only module that imports PyGithub (`github`), so the rest of opsbot depends on the
`Forge` Protocol, never on GitHub's object model.

Why it is built this way:

- **Few requests per command.** GitHub's secondary limits count writes (80 content-creating
  requests a minute), so a PR costs one tree with every file inline, one commit, one ref, one
  pull and one labels call. The base tree comes from the mirror, never from the API, and the
  repository object is lazy (no `GET /repos/o/r`).
- **Our own retries, bounded.** PyGithub's default `GithubRetry` retries 403s and 5xx up to ten
  times and then raises `requests.RetryError`; its default throttling sleeps 1 s between writes.
  Both are switched off (`retry=None`, `seconds_between_*=0`) and replaced by one wrapper that
  honours `Retry-After` and `X-RateLimit-Reset`, backs off on 5xx and timeouts, stops after a
  bounded number of attempts and total sleep, and says in words what GitHub refused.
- **Every write is safe to repeat.** A timed-out `POST /git/refs` or `POST /pulls` may have
  happened on GitHub; the retry then meets "Reference already exists" / "A pull request already
  exists" and turns it into the existing branch or PR, so a flaky network never makes a second PR.
- **Secrets stay out of sight.** The token reaches `git` through `GIT_CONFIG_*` environment
  variables (never argv, never `.git/config`), and every error text is scrubbed of it.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import requests
from github import Auth, Github, GithubException, GithubIntegration, InputGitTreeElement
from github.GitCommit import GitCommit
from github.GitRef import GitRef
from github.GitTree import GitTree
from github.PullRequest import PullRequest as GhPullRequest
from github.Repository import Repository

from opsbot.core.model import Change, PullRequest
from opsbot.errors import CommandError, ConfigError, HeadChanged, MergeConflict, PermanentError
from opsbot.metrics import DEFAULT as DEFAULT_METRICS
from opsbot.metrics import Metrics
from opsbot.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Refresh an installation token this long before GitHub says it expires, so a token never dies
#: between our check and GitHub's.
TOKEN_REFRESH_MARGIN = 300.0
#: GitHub: "If you don't see a retry-after header, wait at least one minute" (secondary limits).
SECONDARY_LIMIT_WAIT = 60.0

#: The mirror holds GitHub's branches as its own, so `git fetch --prune` makes it an exact copy.
MIRROR_REFSPEC = "+refs/heads/*:refs/heads/*"

_SECONDARY_MARKERS = (
    "secondary rate limit",
    "please wait a few minutes",
    "please retry your request again later",
)


def git_remote_url(api_url: str, full_name: str) -> str:
    """The HTTPS clone URL that goes with a REST base URL (github.com or GitHub Enterprise)."""
    u = urllib.parse.urlsplit(api_url)
    if u.hostname == "api.github.com":
        return f"https://github.com/{full_name}.git"
    path = u.path.rstrip("/")
    for suffix in ("/api/v3", "/api"):
        if path.endswith(suffix):
            path = path[: -len(suffix)]
            break
    return urllib.parse.urlunsplit((u.scheme, u.netloc, f"{path}/{full_name}.git", "", ""))


def _read_private_key(value: str) -> str:
    """Accept the PEM itself, a PEM with literal `\\n` (one-line env var), or a path to the file."""
    text = value.strip()
    if text.startswith("-----BEGIN"):
        return text.replace("\\n", "\n") + "\n"
    path = Path(text).expanduser()
    if path.is_file():
        return path.read_text()
    raise ConfigError("GITHUB_APP_PRIVATE_KEY: expected a PEM private key or the path to one")


class _InstallationTokens:
    """GitHub App installation tokens, minted on demand and renewed before they expire.

    Why not PyGithub's `AppInstallationAuth`: it checks expiry against the real wall clock only,
    and opsbot needs the same token for `git fetch` of the mirror; one source for both, with an
    injectable clock, keeps REST and Git on a token that is valid now.
    """

    def __init__(
        self,
        integration: GithubIntegration,
        installation_id: int,
        clock: Callable[[], float],
    ) -> None:
        self._integration = integration
        self._installation_id = installation_id
        self._clock = clock
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires_at = 0.0
        self.minted = 0

    def get(self) -> str:
        with self._lock:
            if self._token is None or self._clock() >= self._expires_at - TOKEN_REFRESH_MARGIN:
                auth = self._integration.get_access_token(self._installation_id)
                self._token = auth.token
                self._expires_at = auth.expires_at.timestamp()
                self.minted += 1
                log.info(
                    "minted a GitHub App installation token (valid until %s)", auth.expires_at.isoformat()
                )
            return self._token

    def invalidate(self) -> None:
        with self._lock:
            self._token = None


class _InstallationAuth(Auth.Auth):
    """PyGithub auth that asks `_InstallationTokens` for a valid token on every request."""

    def __init__(self, tokens: _InstallationTokens) -> None:
        self._tokens = tokens

    @property
    def token_type(self) -> str:
        return "token"

    @property
    def token(self) -> str:
        return self._tokens.get()

    @property
    def _masked_token(self) -> str:
        return "token (installation token removed)"


class GitHubForge:
    """`Forge` on GitHub or GitHub Enterprise (see the module docstring for the why)."""

    name = "github"

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        max_attempts: int = 5,
        max_total_sleep: float = 120.0,
        backoff_base: float = 1.0,
        backoff_cap: float = 30.0,
        timeout: int = 15,
        git_url: str | None = None,
        mirror_path: str | None = None,
        git_timeout: float = 300.0,
        metrics: Metrics | None = None,
    ) -> None:
        #: the bot's metrics (errors and retries of every GitHub call); the process default alone
        self.metrics = DEFAULT_METRICS if metrics is None else metrics
        full_name = settings.github_repository
        if "/" not in full_name:
            raise ConfigError("GITHUB_REPOSITORY: set it to owner/name when OPSBOT_FORGE=github")
        self.full_name = full_name
        self.owner, self.repo_name = full_name.split("/", 1)
        self.api_url = settings.github_api_url.rstrip("/")
        self.merge_method = settings.github_merge_method
        self.base_branch = settings.base_branch
        self.max_age = float(settings.mirror_max_age_seconds)
        self._clock = clock
        self._sleep = sleep
        self.max_attempts = max(1, max_attempts)
        self.max_total_sleep = max_total_sleep
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.git_timeout = git_timeout
        self.git_url = git_url or git_remote_url(self.api_url, full_name)
        # OPSBOT_REPO names the mirror with GitHub (DESIGN §4); "." is the CLI's default, not a choice
        chosen = mirror_path or (settings.repo if settings.repo not in ("", ".") else "")
        self.mirror = Path(
            chosen or Path(settings.state_dir) / "mirror" / self.owner / f"{self.repo_name}.git"
        ).absolute()
        self._mirror_lock = threading.Lock()
        self._fetched_at: float | None = None
        self._secrets: list[str] = []

        common: dict[str, Any] = {
            "base_url": self.api_url,
            "timeout": timeout,
            "retry": None,
            "seconds_between_requests": 0,
            "seconds_between_writes": 0,
        }
        self._tokens: _InstallationTokens | None = None
        self._static_token: str | None = None
        auth: Auth.Auth
        if settings.github_token:
            self._static_token = settings.github_token.get()
            self._secrets.append(settings.github_token.get())
            auth = Auth.Token(settings.github_token.get())
        elif (
            settings.github_app_id and settings.github_app_private_key and settings.github_app_installation_id
        ):
            key = _read_private_key(settings.github_app_private_key.get())
            try:
                installation_id = int(settings.github_app_installation_id)
            except ValueError:
                raise ConfigError("GITHUB_APP_INSTALLATION_ID: expected a number") from None
            integration = GithubIntegration(auth=Auth.AppAuth(settings.github_app_id, key), **common)
            self._tokens = _InstallationTokens(integration, installation_id, clock)
            auth = _InstallationAuth(self._tokens)
        else:
            raise ConfigError(
                "GitHub auth: set GITHUB_TOKEN, or GITHUB_APP_ID + GITHUB_APP_PRIVATE_KEY"
                " + GITHUB_APP_INSTALLATION_ID"
            )
        self._gh = Github(auth=auth, lazy=True, per_page=100, **common)
        # lazy: a Repository object without `GET /repos/o/r`; errors surface on first real use
        self._repo: Repository = self._gh.get_repo(full_name)

    # ------------------------------------------------------------------------------ tokens

    def _token(self) -> str:
        if self._tokens is not None:
            token = self._tokens.get()
            if token not in self._secrets:
                self._secrets.append(token)
            return token
        assert self._static_token is not None
        return self._static_token

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            if secret:
                text = text.replace(secret, "***")
                text = text.replace(base64.b64encode(f"x-access-token:{secret}".encode()).decode(), "***")
        return text

    # ------------------------------------------------------------------------------ retries

    def _backoff(self, attempt: int) -> float:
        return float(min(self.backoff_cap, self.backoff_base * (2 ** (attempt - 1))))

    def _retry_delay(self, exc: BaseException, attempt: int) -> tuple[float | None, str]:
        """How long to wait before trying again (None: do not retry), and why, in words."""
        if isinstance(exc, requests.exceptions.Timeout):
            return self._backoff(attempt), "GitHub did not answer in time"
        if isinstance(exc, requests.exceptions.ConnectionError):
            return self._backoff(attempt), "could not connect to GitHub"
        if not isinstance(exc, GithubException):
            return None, ""
        status = exc.status
        headers = {str(k).lower(): str(v) for k, v in (exc.headers or {}).items()}
        message = _message(exc).lower()
        if status in (403, 429):
            if "retry-after" in headers:
                try:
                    return max(0.0, float(headers["retry-after"])), "GitHub asked us to slow down"
                except ValueError:
                    pass
            if headers.get("x-ratelimit-remaining") == "0" and "x-ratelimit-reset" in headers:
                try:
                    reset = float(headers["x-ratelimit-reset"])
                except ValueError:
                    reset = self._clock() + SECONDARY_LIMIT_WAIT
                return max(0.0, reset - self._clock()) + 1.0, "the GitHub API rate limit is used up"
            if status == 429 or any(m in message for m in _SECONDARY_MARKERS):
                return SECONDARY_LIMIT_WAIT, "GitHub asked us to slow down"
            return None, ""
        if status >= 500:
            return self._backoff(attempt), f"GitHub answered {status}"
        return None, ""

    def _call(self, what: str, fn: Callable[[], T], ambiguous: list[bool] | None = None) -> T:
        """Run one GitHub call with bounded retries; non-retryable GitHub errors pass through.

        `ambiguous` collects whether an attempt failed in a way where GitHub may have done the
        write anyway (timeout, 5xx), so the caller can tell "created" from "found".
        """
        attempt = 0
        slept = 0.0
        refreshed_token = False
        while True:
            attempt += 1
            try:
                return fn()
            except (GithubException, requests.exceptions.RequestException) as exc:
                self.metrics.record_api_error("github", _error_kind(exc))
                if (
                    isinstance(exc, GithubException)
                    and exc.status == 401
                    and self._tokens is not None
                    and not refreshed_token
                ):
                    # an installation token can be revoked or expire early: mint one and go again
                    refreshed_token = True
                    self._tokens.invalidate()
                    self.metrics.record_api_retry("github")
                    continue
                delay, why = self._retry_delay(exc, attempt)
                if delay is None:
                    raise
                if ambiguous is not None and not (
                    isinstance(exc, GithubException) and exc.status in (403, 429)
                ):
                    ambiguous.append(True)
                if attempt >= self.max_attempts or slept + delay > self.max_total_sleep:
                    if delay > self.max_total_sleep:
                        raise PermanentError(
                            f"GitHub refused {what}: {why}; try again in about {round(delay)} s."
                        ) from None
                    raise PermanentError(
                        f"GitHub refused {what}: {why} ({attempt} attempts); try again later."
                    ) from None
                log.warning("%s: %s; retrying in %.1f s (attempt %d)", what, why, delay, attempt)
                self.metrics.record_api_retry("github")
                self._sleep(delay)
                slept += delay

    @contextlib.contextmanager
    def _refusals(self, what: str) -> Iterator[None]:
        """Turn whatever GitHub error is left into a message a chat user understands."""
        try:
            yield
        except GithubException as exc:
            raise PermanentError(self._refusal_text(what, exc)) from None
        except requests.exceptions.RequestException as exc:
            raise PermanentError(
                f"GitHub refused {what}: {self._scrub(type(exc).__name__)} talking to {self.api_url}"
            ) from None

    def _refusal_text(self, what: str, exc: GithubException) -> str:
        message = self._scrub(_message(exc)) or "no reason given"
        if exc.status == 401:
            return (
                f"GitHub refused {what}: bad credentials (401). Check GITHUB_TOKEN or the GitHub App "
                "id, key and installation."
            )
        if exc.status == 404:
            return (
                f"GitHub refused {what}: not found (404). Check GITHUB_REPOSITORY={self.full_name} and "
                "that the token can see it."
            )
        if exc.status == 403:
            return (
                f"GitHub refused {what}: {message} (403). "
                f"Does the token have write access to {self.full_name}?"
            )
        return f"GitHub refused {what}: {message} ({exc.status})."

    # ------------------------------------------------------------------------------ mirror

    def _git_env(self, token: str | None = None) -> dict[str, str]:
        """A clean environment for git: no user/system config, no prompts, no inherited tracing.

        With `token`, the credential goes in as `http.extraHeader` through GIT_CONFIG_* variables,
        so it is never in argv (visible in `ps`) nor written to the mirror's config.
        """
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TMPDIR", "HOME")}
        env.update({"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull, "GIT_TERMINAL_PROMPT": "0"})
        if token is not None:
            basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
            env.update(
                {
                    "GIT_ASKPASS": "",
                    "SSH_ASKPASS": "",
                    "GIT_CONFIG_COUNT": "1",
                    "GIT_CONFIG_KEY_0": "http.extraHeader",
                    "GIT_CONFIG_VALUE_0": f"Authorization: Basic {basic}",
                }
            )
        return env

    def _git(
        self, *args: str, env: dict[str, str] | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            ["git", "--git-dir", str(self.mirror), *args],
            capture_output=True,
            text=True,
            env=env or self._git_env(),
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            detail = self._scrub(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "")
            raise PermanentError(f"git {args[0]} in the mirror of {self.full_name} failed: {detail}")
        return proc

    def _ensure_mirror(self) -> None:
        """Create the bare mirror, or check that the directory is one opsbot made.

        Why the check: a fetch into the mirror prunes branches GitHub no longer has, so pointing
        OPSBOT_REPO at a working checkout or someone's bare repo must be refused, not "fixed".
        """
        not_ours = ConfigError(
            f"{self.mirror} is not an opsbot mirror. With OPSBOT_FORGE=github, OPSBOT_REPO (--repo) "
            "is where opsbot keeps its own mirror clone: name a new or empty directory, or unset it "
            "to use OPSBOT_STATE_DIR/mirror."
        )
        if (self.mirror / "HEAD").exists():
            if self._git("config", "remote.origin.fetch", check=False).stdout.strip() != MIRROR_REFSPEC:
                raise not_ours
            if self._git("config", "remote.origin.url", check=False).stdout.strip() != self.git_url:
                self._git("config", "remote.origin.url", self.git_url)
            return
        if self.mirror.exists() and (not self.mirror.is_dir() or any(self.mirror.iterdir())):
            raise not_ours
        self.mirror.mkdir(parents=True, exist_ok=True)
        self._git("init", "--bare", "-q")
        self._git("config", "remote.origin.url", self.git_url)
        self._git("config", "remote.origin.fetch", MIRROR_REFSPEC)
        self._git("config", "core.logAllRefUpdates", "false")

    def refresh(self) -> None:
        """Fetch every branch from GitHub into the mirror (pruning deleted ones).

        Network trouble is retried with the same bounded backoff as the API; an authentication
        failure is retried once with a fresh App token, then reported, never looped on.
        """
        what = f"the mirror fetch of {self.full_name}"
        with self._refusals(what), self._mirror_lock:
            self._ensure_mirror()
            attempt, slept, refreshed_token = 0, 0.0, False
            while True:
                attempt += 1
                token = self._call("getting a token for git", self._token)
                try:
                    proc = self._git(
                        "fetch",
                        "--prune",
                        "--quiet",
                        "origin",
                        env=self._git_env(token),
                        check=False,
                        timeout=self.git_timeout,
                    )
                    err = proc.stderr
                except subprocess.TimeoutExpired:
                    proc, err = None, f"no answer within {self.git_timeout:.0f} s"
                if proc is not None and proc.returncode == 0:
                    self._point_head(token)
                    self._fetched_at = self._clock()
                    return
                markers = ("401", "403", "Authentication failed", "could not read Username", "denied")
                if any(m in err for m in markers):
                    if self._tokens is not None and not refreshed_token:
                        refreshed_token = True
                        self._tokens.invalidate()
                        continue
                    raise PermanentError(
                        f"GitHub refused {what}: authentication failed. "
                        "Check GITHUB_TOKEN or the GitHub App installation."
                    )
                detail = self._scrub(err.strip().splitlines()[-1] if err.strip() else "git fetch failed")
                delay = self._backoff(attempt)
                if attempt >= self.max_attempts or slept + delay > self.max_total_sleep:
                    raise PermanentError(f"GitHub refused {what}: {detail} ({attempt} attempts).")
                log.warning("%s failed: %s; retrying in %.1f s", what, detail, delay)
                self._sleep(delay)
                slept += delay

    def _point_head(self, token: str) -> None:
        """Make the mirror's HEAD name the repository's default branch, as a clone would.

        Why: `git init --bare` points HEAD at whatever `init.defaultBranch` says (often `master`),
        and `git fetch` never moves it, so planning would look for a branch that does not exist.
        Asked of GitHub (`ls-remote --symref`) only while HEAD names no fetched branch: on the
        first fetch, or after the default branch was renamed and the old one pruned.
        """
        head = self._git("symbolic-ref", "-q", "HEAD", check=False).stdout.strip()
        if head and self._git("rev-parse", "--verify", "-q", head, check=False).returncode == 0:
            return
        target = f"refs/heads/{self.base_branch}" if self.base_branch else ""
        if not target:
            proc = self._git(
                "ls-remote",
                "--symref",
                "origin",
                "HEAD",
                env=self._git_env(token),
                check=False,
                timeout=self.git_timeout,
            )
            for line in proc.stdout.splitlines():
                if line.startswith("ref: ") and line.endswith("\tHEAD"):
                    target = line[len("ref: ") :].split("\t", 1)[0]
        if target and self._git("rev-parse", "--verify", "-q", target, check=False).returncode == 0:
            self._git("symbolic-ref", "HEAD", target)

    def refresh_if_stale(self) -> bool:
        """Fetch when the mirror is older than mirror_max_age_seconds; True when it fetched."""
        if self._fetched_at is not None and self._clock() - self._fetched_at < self.max_age:
            return False
        self.refresh()
        return True

    def repo_path(self) -> str:
        self.refresh_if_stale()
        return str(self.mirror)

    def _base_tree(self, change: Change) -> str:
        """The tree of `change.base_sha`, from the mirror (fetching once if it is not there yet)."""
        for attempt in (1, 2):
            if (self.mirror / "HEAD").exists():
                proc = self._git("rev-parse", "--verify", "-q", f"{change.base_sha}^{{tree}}", check=False)
                if proc.returncode == 0:
                    return proc.stdout.strip()
            if attempt == 1:
                self.refresh()
        raise CommandError(
            f"The base commit {change.base_sha[:7]} of {change.base_branch} is not on GitHub.",
            hint="Plan the change again on the current branch.",
        )

    def _modes(self, base_sha: str, paths: Sequence[str]) -> dict[str, str]:
        """Keep an edited file's mode (an executable stays executable)."""
        if not paths:
            return {}
        out = self._git("ls-tree", "-z", base_sha, "--", *paths).stdout
        modes = {}
        for record in out.split("\0"):
            if not record:
                continue
            meta, _, path = record.partition("\t")
            mode, kind, _sha = meta.split()
            if kind == "blob":
                modes[path] = mode
        return modes

    # ------------------------------------------------------------------------------ writes

    def _write_commit(self, change: Change, message: str) -> str:
        """One tree (base_tree + every file inline) and one commit on `change.base_sha`."""
        if not change.edits:
            raise CommandError("Nothing to change: the change has no file edits.")
        base_tree = self._base_tree(change)
        modes = self._modes(change.base_sha, [e.path for e in change.edits])
        elements = [
            InputGitTreeElement(e.path, modes.get(e.path, "100644"), "blob", content=e.after)
            for e in change.edits
        ]
        requester = self._repo.requester
        tree_ref = GitTree(
            requester,
            attributes={"sha": base_tree, "url": f"{self._repo.url}/git/trees/{base_tree}"},
            completed=True,
        )
        parent = GitCommit(
            requester,
            attributes={"sha": change.base_sha, "url": f"{self._repo.url}/git/commits/{change.base_sha}"},
            completed=True,
        )
        tree = self._call(
            "creating the tree", lambda: self._repo.create_git_tree(elements, base_tree=tree_ref)
        )
        commit = self._call(
            "creating the commit", lambda: self._repo.create_git_commit(message, tree, [parent])
        )
        return commit.sha

    def _branch_ref(self, branch: str) -> GitRef:
        # PATCH goes to /git/refs/heads/X (plural); `get_git_ref` would build the singular GET path
        url = f"{self._repo.url}/git/refs/heads/{urllib.parse.quote(branch, safe='/')}"
        return GitRef(
            self._repo.requester, attributes={"ref": f"refs/heads/{branch}", "url": url}, completed=True
        )

    def _force_branch(self, branch: str, sha: str) -> None:
        ref = self._branch_ref(branch)
        self._call(f"moving branch {branch}", lambda: ref.edit(sha, force=True))

    def open_pr(
        self, change: Change, branch: str, message: str, body: str, labels: Sequence[str]
    ) -> PullRequest:
        what = f"opening the pull request for {branch}"
        with self._refusals(what):
            sha = self._write_commit(change, message)
            try:
                self._call(
                    f"creating branch {branch}",
                    lambda: self._repo.create_git_ref(f"refs/heads/{branch}", sha),
                )
            except GithubException as exc:
                if not (exc.status == 422 and "already exists" in _message(exc).lower()):
                    raise
                # same branch = same intent on the same base: an open PR there is the answer
                existing = self.find_open_pr(branch)
                if existing is not None:
                    return replace(existing, created=False)
                self._force_branch(branch, sha)
            ambiguous: list[bool] = []
            try:
                gh_pr = self._call(
                    what,
                    lambda: self._repo.create_pull(
                        base=change.base_branch, head=branch, title=change.title, body=body
                    ),
                    ambiguous,
                )
            except GithubException as exc:
                text = _message(exc).lower()
                if exc.status == 422 and "already exists" in text:
                    existing = self.find_open_pr(branch)
                    if existing is not None:
                        if not ambiguous:
                            return replace(existing, created=False)
                        # an earlier attempt whose answer was lost made it: finish the job
                        self._label(existing.number, labels)
                        return replace(existing, created=True)
                if exc.status == 422 and "no commits between" in text:
                    raise CommandError(
                        f"Nothing to change: {branch} has no commits beyond {change.base_branch}."
                    ) from None
                raise
            self._label(gh_pr.number, labels)
            pr = self._model(gh_pr)
            log.info("opened PR #%d for %s on %s", pr.number, branch, self.full_name)
            return pr

    def _label(self, number: int, labels: Sequence[str]) -> None:
        if not labels:
            return
        issue = self._repo.get_issue(number)  # lazy: POST /issues/N/labels is the only request
        try:
            self._call(f"labelling PR #{number}", lambda: issue.add_to_labels(*labels))
        except (GithubException, PermanentError) as exc:
            # the PR exists; a missing label must not make the requester think it failed
            log.warning("could not label PR #%s: %s", number, self._scrub(str(exc)))

    def update_pr(self, number: int, change: Change, message: str) -> PullRequest:
        with self._refusals(f"updating PR #{number}"):
            current = self._get(number)
            if current.state != "open":
                raise CommandError(f"PR #{number} is {current.state}; it cannot be updated.")
            sha = self._write_commit(change, message)
            # re-planned on the new base, so history is replaced, never merged textually
            self._force_branch(current.branch, sha)
            return replace(current, head_sha=sha, base_branch=change.base_branch, created=False)

    def merge_pr(self, number: int, message: str, expected_head: str = "") -> PullRequest:
        """PUT /pulls/{n}/merge with the head that was approved as `sha`: GitHub merges that or nothing."""
        with self._refusals(f"merging PR #{number}"):
            gh_pr = self._call(f"reading PR #{number}", lambda: _completed(self._repo.get_pull(number)))
            current = self._model(gh_pr)
            if current.state == "merged":
                return replace(current, created=False)
            if current.state != "open":
                raise CommandError(
                    f"PR #{number} is closed; it cannot be merged.", hint="Reopen it or ask again."
                )
            if expected_head and current.head_sha != expected_head:
                raise HeadChanged(
                    f"PR #{number} changed: its branch is at {current.head_sha[:7]}, "
                    f"not the approved {expected_head[:7]}.",
                    head_sha=current.head_sha,
                )
            title, _, rest = message.partition("\n")
            sha = expected_head or current.head_sha
            try:
                status = self._call(
                    f"merging PR #{number}",
                    lambda: gh_pr.merge(
                        commit_title=title.strip() or current.title,
                        commit_message=rest.strip(),
                        merge_method=self.merge_method,
                        sha=sha,
                    ),
                )
            except GithubException as exc:
                if exc.status not in (405, 409, 422):
                    raise
                after = self._get(number)
                if after.state == "merged":  # a retried or concurrent merge already went through
                    return after
                raise _merge_refusal(number, exc, current) from None
            return replace(current, state="merged", merge_sha=status.sha, created=False)

    def close_pr(self, number: int, comment: str = "") -> PullRequest:
        with self._refusals(f"closing PR #{number}"):
            gh_pr = self._call(f"reading PR #{number}", lambda: _completed(self._repo.get_pull(number)))
            if gh_pr.state != "open":
                return self._model(gh_pr)
            if comment:
                self.comment(number, comment)
            self._call(f"closing PR #{number}", lambda: gh_pr.edit(state="closed"))
            return self._model(gh_pr)

    def comment(self, number: int, body: str) -> None:
        with self._refusals(f"commenting on PR #{number}"):
            issue = self._repo.get_issue(number)  # lazy: no request
            self._call(f"commenting on PR #{number}", lambda: issue.create_comment(body))

    def set_status(self, sha: str, context: str, state: str, description: str, target_url: str = "") -> None:
        """`POST /repos/{o}/{r}/statuses/{sha}`: one request (PyGithub's Commit would GET it first)."""
        body: dict[str, Any] = {"state": state, "context": context, "description": description[:140]}
        if target_url.startswith(("https://", "http://")):
            body["target_url"] = target_url
        with self._refusals(f"setting status {context} on {sha[:7]}"):
            self._call(
                f"setting status {context} on {sha[:7]}",
                lambda: self._repo.requester.requestJsonAndCheck(
                    "POST", f"{self._repo.url}/statuses/{sha}", input=body
                ),
            )

    # ------------------------------------------------------------------------------ reads

    def _get(self, number: int) -> PullRequest:
        return self._model(
            self._call(f"reading PR #{number}", lambda: _completed(self._repo.get_pull(number)))
        )

    def get_pr(self, number: int) -> PullRequest:
        with self._refusals(f"reading PR #{number}"):
            return replace(self._get(number), created=False)

    def find_open_pr(self, branch: str) -> PullRequest | None:
        with self._refusals(f"looking up the PR for {branch}"):
            found = self._call(
                f"looking up the PR for {branch}",
                lambda: next(iter(self._repo.get_pulls(state="open", head=f"{self.owner}:{branch}")), None),
            )
            return None if found is None else replace(self._model(found), created=False)

    def list_prs(self, state: str = "open") -> list[PullRequest]:
        if state not in ("open", "closed", "merged", "all"):
            raise CommandError(f"Unknown PR state {state!r}: use open, closed, merged or all.")
        api_state = "closed" if state == "merged" else state
        with self._refusals("listing pull requests"):
            pulls = self._call("listing pull requests", lambda: list(self._repo.get_pulls(state=api_state)))
            models = [replace(self._model(p), created=False) for p in pulls]
            if state == "merged":
                return [m for m in models if m.state == "merged"]
            if state == "closed":
                return [m for m in models if m.state == "closed"]
            return models

    @staticmethod
    def _model(pr: GhPullRequest) -> PullRequest:
        merged = bool(pr.merged)
        return PullRequest(
            number=pr.number,
            url=pr.html_url,
            branch=pr.head.ref,
            base_branch=pr.base.ref,
            head_sha=pr.head.sha,
            state="merged" if merged else pr.state,
            title=pr.title or "",
            merge_sha=(pr.merge_commit_sha or "") if merged else "",
        )


def _completed(pr: GhPullRequest) -> GhPullRequest:
    """Fetch a lazy PullRequest now, inside the retry wrapper, not at some later attribute access."""
    pr.complete()
    return pr


def _error_kind(exc: BaseException) -> str:
    """A small, fixed set of words for the error metric's `kind` label (never the message)."""
    if isinstance(exc, requests.exceptions.Timeout):
        return "timeout"
    if isinstance(exc, requests.exceptions.ConnectionError):
        return "connection"
    if not isinstance(exc, GithubException):
        return "other"
    status = exc.status
    headers = {str(k).lower(): str(v) for k, v in (exc.headers or {}).items()}
    if status == 429 or (
        status == 403
        and (
            "retry-after" in headers
            or headers.get("x-ratelimit-remaining") == "0"
            or any(m in _message(exc).lower() for m in _SECONDARY_MARKERS)
        )
    ):
        return "rate_limited"
    if status >= 500:
        return "server_error"
    return {401: "unauthorized", 403: "forbidden", 404: "not_found", 409: "conflict", 422: "invalid"}.get(
        status, f"http_{status}"
    )


def _message(exc: GithubException) -> str:
    """GitHub's own words: the top message plus any `errors[].message` (where 422s hide them)."""
    data = exc.data if isinstance(exc.data, dict) else {}
    parts = []
    top = data.get("message")
    if isinstance(top, str) and top:
        parts.append(top)
    for err in data.get("errors") or []:
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            parts.append(err["message"])
        elif isinstance(err, dict) and err.get("field"):
            parts.append(f"{err.get('field')} {err.get('code', 'invalid')}")
    return ": ".join(parts)


def _merge_refusal(number: int, exc: GithubException, pr: PullRequest) -> CommandError:
    """Name what blocks the merge, in GitHub's words plus what to do about it (typed where opsbot acts on it)."""
    reason = _message(exc) or f"GitHub answered {exc.status}"
    lower = reason.lower()
    what = f"GitHub refused to merge PR #{number}: {reason}"
    if exc.status == 409:
        return HeadChanged(what, hint="The PR changed since it was approved; review it again, then merge.")
    if "not mergeable" in lower or "conflict" in lower:
        return MergeConflict(what, hint=f"It conflicts with {pr.base_branch}; it must be re-planned on the current base.")
    if "approving review" in lower or "review" in lower:
        hint = "It needs approving reviews on GitHub first."
    elif "status check" in lower:
        hint = "Wait for the required checks to pass."
    elif "not allowed" in lower:
        hint = "Set OPSBOT_MERGE_METHOD to a method the repository allows."
    else:
        hint = ""
    return CommandError(f"GitHub refused to merge PR #{number}: {reason}", hint=hint)
