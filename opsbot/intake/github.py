"""GitHub webhook intake: signature check and payload parsing, as pure functions.

Why pure: the HTTP route (aiohttp) only has to read the raw body, call `verify_signature` on the
exact bytes GitHub signed, and hand `parse_event` the decoded JSON; everything that can be wrong
in a payload is decided here, where unit tests reach it without a server.

`parse_event` never raises on odd input (a fuzzed or foreign payload yields None): GitHub sends
many events and actions opsbot does not care about, and none of them may crash intake.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PrOpened:
    number: int
    branch: str
    base: str
    title: str
    author: str
    url: str
    head_sha: str = ""
    repository: str = ""


@dataclass(frozen=True)
class PrMerged:
    number: int
    merge_sha: str
    branch: str
    base: str
    title: str
    author: str
    merged_by: str
    url: str
    repository: str = ""


@dataclass(frozen=True)
class PrClosed:
    """Closed without merging (by a person on GitHub, or by opsbot's own cancel)."""

    number: int
    branch: str
    closed_by: str
    repository: str = ""


@dataclass(frozen=True)
class PrSynchronized:
    """New commits on an open PR's branch (`pull_request` `synchronize`), pushed by `pusher`."""

    number: int
    branch: str
    before: str
    after: str
    pusher: str
    repository: str = ""


@dataclass(frozen=True)
class ReviewApproved:
    number: int
    reviewer: str
    branch: str
    commit_sha: str = ""
    repository: str = ""


@dataclass(frozen=True)
class Push:
    ref: str
    before: str
    after: str
    pusher: str
    repository: str = ""


GitHubEvent = PrOpened | PrMerged | PrClosed | PrSynchronized | ReviewApproved | Push


def verify_signature(secret: str, body: bytes, header: str | None) -> bool:
    """True when `X-Hub-Signature-256` is the HMAC-SHA256 of the raw body under `secret`.

    An empty secret never verifies: an unconfigured secret must not mean "accept anything".
    """
    if not secret or not header or not header.startswith("sha256="):
        return False
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), header.strip().encode("utf-8", "replace"))


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _login(value: Any) -> str:
    return _str(_dict(value).get("login"))


def _number(pr: dict[str, Any], payload: dict[str, Any]) -> int | None:
    for value in (payload.get("number"), pr.get("number")):
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def parse_event(event: str, payload: dict[str, Any]) -> GitHubEvent | None:
    """The event opsbot acts on, or None for every other event, action or malformed payload."""
    if not isinstance(payload, dict):
        return None
    repository = _str(_dict(payload.get("repository")).get("full_name"))
    action = payload.get("action")
    if event == "pull_request":
        pr = _dict(payload.get("pull_request"))
        number = _number(pr, payload)
        if number is None:
            return None
        head, base = _dict(pr.get("head")), _dict(pr.get("base"))
        branch = _str(head.get("ref"))
        if action in ("opened", "reopened"):
            return PrOpened(
                number=number,
                branch=branch,
                base=_str(base.get("ref")),
                title=_str(pr.get("title")),
                author=_login(pr.get("user")),
                url=_str(pr.get("html_url")),
                head_sha=_str(head.get("sha")),
                repository=repository,
            )
        if action == "closed":
            if pr.get("merged") is True:
                merge_sha = _str(pr.get("merge_commit_sha"))
                if not merge_sha:
                    return None
                return PrMerged(
                    number=number,
                    merge_sha=merge_sha,
                    branch=branch,
                    base=_str(base.get("ref")),
                    title=_str(pr.get("title")),
                    author=_login(pr.get("user")),
                    merged_by=_login(pr.get("merged_by")) or _login(payload.get("sender")),
                    url=_str(pr.get("html_url")),
                    repository=repository,
                )
            return PrClosed(
                number=number, branch=branch, closed_by=_login(payload.get("sender")), repository=repository
            )
        if action == "synchronize":
            after = _str(payload.get("after")) or _str(head.get("sha"))
            if not after:
                return None
            return PrSynchronized(
                number=number,
                branch=branch,
                before=_str(payload.get("before")),
                after=after,
                pusher=_login(payload.get("sender")),
                repository=repository,
            )
        return None
    if event == "pull_request_review":
        review = _dict(payload.get("review"))
        pr = _dict(payload.get("pull_request"))
        number = _number(pr, payload)
        state = _str(review.get("state")).lower()
        if action != "submitted" or state != "approved" or number is None:
            return None
        return ReviewApproved(
            number=number,
            reviewer=_login(review.get("user")) or _login(payload.get("sender")),
            branch=_str(_dict(pr.get("head")).get("ref")),
            commit_sha=_str(review.get("commit_id")),
            repository=repository,
        )
    if event == "push":
        ref, before, after = _str(payload.get("ref")), _str(payload.get("before")), _str(payload.get("after"))
        if not ref or not after:
            return None
        pusher = _str(_dict(payload.get("pusher")).get("name")) or _login(payload.get("sender"))
        return Push(ref=ref, before=before, after=after, pusher=pusher, repository=repository)
    return None
