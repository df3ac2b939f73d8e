"""The nouns of opsbot, as plain data.

Every adapter (Slack, CLI, console, webhooks) and every command speaks in these types, so they hold
no behaviour beyond small derived values; behaviour lives in commands, the engine and the stores.
"""

from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any


def utcnow() -> datetime:
    return datetime.now(UTC)


# --------------------------------------------------------------------------------------------- intents


@dataclass(frozen=True)
class Intent:
    """What a person asked for. Subclasses are the grammar's verbs."""

    @property
    def verb(self) -> str:
        return type(self).__name__.lower()

    def as_dict(self) -> dict[str, Any]:
        return {"verb": self.verb, **asdict(self)}

    def key(self) -> str:
        """Stable identity of the intent: the same ask on the same base gives the same branch."""
        return hashlib.sha256(json.dumps(self.as_dict(), sort_keys=True).encode()).hexdigest()[:10]


@dataclass(frozen=True)
class Scale(Intent):
    app: str
    env: str
    replicas: int


@dataclass(frozen=True)
class ScaleBounds(Intent):
    """`scale app 2-10 in env`: the bounds of the HorizontalPodAutoscaler that manages the app."""

    app: str
    env: str
    min_replicas: int
    max_replicas: int

    @property
    def verb(self) -> str:
        return "scale"


@dataclass(frozen=True)
class Promote(Intent):
    app: str
    target: str
    source: str | None = None


@dataclass(frozen=True)
class Deploy(Intent):
    app: str
    version: str
    env: str


@dataclass(frozen=True)
class Rollback(Intent):
    app: str
    env: str
    version: str | None = None


@dataclass(frozen=True)
class CreateCluster(Intent):
    name: str
    template: str | None = None
    variables: tuple[tuple[str, str], ...] = ()

    @property
    def verb(self) -> str:
        return "create-cluster"


@dataclass(frozen=True)
class Status(Intent):
    app: str | None = None
    env: str | None = None


@dataclass(frozen=True)
class History(Intent):
    app: str
    env: str | None = None


@dataclass(frozen=True)
class Approve(Intent):
    request: str


@dataclass(frozen=True)
class Merge(Intent):
    request: str


@dataclass(frozen=True)
class Cancel(Intent):
    request: str


@dataclass(frozen=True)
class Help(Intent):
    topic: str | None = None


def intent_env(intent: Intent) -> str | None:
    """The env an intent changes or reads, used by RBAC and by request rows."""
    for attr in ("env", "target"):
        value = getattr(intent, attr, None)
        if isinstance(value, str):
            return value
    return None


def intent_request(intent: Intent) -> str | None:
    """The request an approve/merge/cancel intent names."""
    return intent.request if isinstance(intent, Approve | Merge | Cancel) else None


def intent_app(intent: Intent) -> str | None:
    value = getattr(intent, "app", None)
    return value if isinstance(value, str) else None


# --------------------------------------------------------------------------------------------- changes


@dataclass(frozen=True)
class FileEdit:
    """One file's full text before and after; `before is None` means the file is new."""

    path: str
    before: str | None
    after: str


@dataclass(frozen=True)
class FieldChange:
    """One value the change moves, in words people use: `replicas 1 → 3`."""

    app: str
    env: str
    field: str
    old: str | None
    new: str
    file: str


@dataclass(frozen=True)
class Check:
    """One validation gate result: `✅ kustomize build`.

    `skipped` is a check that could not run (e.g. a chart that cannot be fetched): it does not block
    the PR, but it shows as ⚠️ with the reason, because a silent ✅ would claim a proof nobody made.
    """

    name: str
    ok: bool
    detail: str = ""
    skipped: bool = False

    @property
    def mark(self) -> str:
        return "❌" if not self.ok else "⚠️" if self.skipped else "✅"


@dataclass(frozen=True)
class Change:
    """The edits an intent produces on one base commit, plus what a reviewer needs to read."""

    intent: Intent
    base_branch: str
    base_sha: str
    edits: tuple[FileEdit, ...]
    fields: tuple[FieldChange, ...]
    title: str
    checks: tuple[Check, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def files(self) -> list[str]:
        return [e.path for e in self.edits]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def env(self) -> str:
        return self.fields[0].env if self.fields else (intent_env(self.intent) or "")

    @property
    def app(self) -> str:
        return self.fields[0].app if self.fields else (intent_app(self.intent) or "")


# --------------------------------------------------------------------------------------------- requests


class RequestState(enum.StrEnum):
    PROPOSED = "proposed"
    APPROVED = "approved"
    MERGED = "merged"
    DEPLOYED = "deployed"
    FAILED = "failed"
    CLOSED = "closed"
    SUPERSEDED = "superseded"

    @property
    def is_open(self) -> bool:
        return self in (RequestState.PROPOSED, RequestState.APPROVED)


#: Which state may follow which: the stores refuse anything else, so a redelivered webhook or a
#: double click cannot move a request backwards.
TRANSITIONS: dict[RequestState, frozenset[RequestState]] = {
    RequestState.PROPOSED: frozenset(
        {RequestState.APPROVED, RequestState.MERGED, RequestState.CLOSED, RequestState.SUPERSEDED}
    ),
    # approved -> proposed: the approvals were cleared (a push by someone else, a different effect)
    RequestState.APPROVED: frozenset(
        {RequestState.PROPOSED, RequestState.MERGED, RequestState.CLOSED, RequestState.SUPERSEDED}
    ),
    RequestState.MERGED: frozenset({RequestState.DEPLOYED, RequestState.FAILED}),
    RequestState.FAILED: frozenset({RequestState.DEPLOYED}),
    RequestState.DEPLOYED: frozenset(),
    # A PR closed here can still be reopened and merged by hand on the forge: the truth is merged.
    RequestState.CLOSED: frozenset({RequestState.MERGED}),
    RequestState.SUPERSEDED: frozenset({RequestState.MERGED}),
}


@dataclass(frozen=True)
class Actor:
    """Who did something: a chat user id, a GitHub login, or `opsbot` itself."""

    id: str
    name: str = ""
    source: str = "chat"  # chat | cli | github | agent | opsbot

    @property
    def display(self) -> str:
        return self.name or self.id


@dataclass(frozen=True)
class Thread:
    """Where a request was asked, so every later step can reply there."""

    channel: str
    ts: str | None = None


@dataclass
class Request:
    """The lasting record of one intent: the PR, the merge, the deploy, and who did what."""

    id: str
    intent_key: str
    command: str
    verb: str
    app: str
    env: str
    requester: str
    state: RequestState
    forge: str = "local"
    branch: str = ""
    base_branch: str = ""
    base_sha: str = ""
    head_sha: str = ""
    pr_number: int | None = None
    pr_url: str = ""
    merge_sha: str = ""
    title: str = ""
    summary: str = ""
    channel: str = ""
    thread_ts: str = ""
    fields: list[dict[str, Any]] = field(default_factory=list)
    approvals_needed: int = 0
    created_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)
    merged_at: datetime | None = None
    deployed_at: datetime | None = None

    @property
    def effect(self) -> Effect:
        return effect_of(self.fields)


#: What a change does once rendered: (app, env, field, old, new) per moved value, sorted. The file an
#: edit lands in is not part of it: a rebase may move the edit, and the reviewer approved the values.
Effect = tuple[tuple[str, str, str, str, str], ...]


def effect_of(fields: Any) -> Effect:
    """The effect of stored field dicts or `FieldChange`s; equal effects mean the same rendered change."""
    out: set[tuple[str, str, str, str, str]] = set()
    for f in fields:
        get = f.get if isinstance(f, dict) else (lambda k, d=None, f=f: getattr(f, k, d))
        old = get("old", None)
        out.add((str(get("app", "")), str(get("env", "")), str(get("field", "")),
                 "" if old is None else str(old), str(get("new", ""))))
    return tuple(sorted(out))


@dataclass(frozen=True)
class Transition:
    request_id: str
    from_state: RequestState | None
    to_state: RequestState
    actor: str
    detail: str
    at: datetime


@dataclass(frozen=True)
class Approval:
    """One reviewer's yes, valid only for the PR head and the effect it was given on (DESIGN §2)."""

    request_id: str
    approver: str
    source: str  # chat | github
    at: datetime
    head_sha: str = ""
    effect: Effect = ()


# --------------------------------------------------------------------------------------------- forge


@dataclass(frozen=True)
class PullRequest:
    number: int
    url: str
    branch: str
    base_branch: str
    head_sha: str
    state: str  # open | merged | closed
    title: str = ""
    merge_sha: str = ""
    created: bool = True  # False when an identical open PR was returned instead of a new one
    head_author: str = ""  # who made the head commit, when the forge knows and it is not opsbot's


# --------------------------------------------------------------------------------------------- agents


class Outcome(enum.StrEnum):
    PROGRESSING = "progressing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    DEGRADED = "degraded"


@dataclass(frozen=True)
class DeployEvent:
    """What Flux or Argo CD reported about one object at one revision."""

    source: str  # flux | argocd | watch
    kind: str  # Kustomization | HelmRelease | Application
    name: str
    namespace: str
    revision: str  # full git SHA when known (the `sha1:` part of Flux revisions)
    outcome: Outcome
    reason: str
    message: str
    at: datetime
    cluster: str = ""

    def dedup_key(self) -> str:
        raw = "|".join(
            [self.source, self.kind, self.namespace, self.name, self.revision, self.outcome, self.reason]
        )
        return hashlib.sha256(raw.encode()).hexdigest()[:32]
