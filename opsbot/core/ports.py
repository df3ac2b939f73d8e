"""The small interfaces that keep adapters swappable (Atlantis keeps its VCS behind one like these).

Commands and the dispatcher see only these Protocols; `app.py` picks the implementations.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from opsbot.core.model import Approval, Change, PullRequest, Request, RequestState, Transition
from opsbot.policy.model import AuditEntry, Freeze, Lock, NewAudit


class Forge(Protocol):
    """Where pull requests live: the local git forge, or GitHub."""

    name: str

    def repo_path(self) -> str:
        """A local checkout or mirror to read manifests from (fresh enough to plan on)."""
        ...

    def refresh(self) -> None:
        """Bring the local copy up to date with the remote (no-op for the local forge)."""
        ...

    def open_pr(
        self, change: Change, branch: str, message: str, body: str, labels: Sequence[str]
    ) -> PullRequest:
        """Commit the change on `branch` from `change.base_sha` and open a PR; idempotent per branch."""
        ...

    def update_pr(self, number: int, change: Change, message: str) -> PullRequest:
        """Point the PR's branch at a new commit of `change` on its (moved) base: re-planned, not merged."""
        ...

    def find_open_pr(self, branch: str) -> PullRequest | None: ...

    def get_pr(self, number: int) -> PullRequest: ...

    def merge_pr(self, number: int, message: str, expected_head: str = "") -> PullRequest:
        """Merge exactly `expected_head` (when given), or raise CommandError saying what blocks it:
        HeadChanged when the branch moved, MergeConflict when it no longer merges into its base."""
        ...

    def close_pr(self, number: int, comment: str = "") -> PullRequest: ...

    def comment(self, number: int, body: str) -> None: ...

    def list_prs(self, state: str = "open") -> list[PullRequest]: ...

    def set_status(self, sha: str, context: str, state: str, description: str, target_url: str = "") -> None:
        """Set the commit status `context` on `sha` (GitHub's shape: state is pending, success,
        failure or error; description at most 140 characters). Policies and gates report here, so a
        required status check stops a merge made on the forge by hand too."""
        ...


#: Commit status states, as GitHub names them.
STATUS_STATES = ("error", "failure", "pending", "success")


@dataclass(frozen=True)
class NewRequest:
    intent_key: str
    command: str
    verb: str
    app: str
    env: str
    requester: str
    forge: str
    branch: str
    base_branch: str
    base_sha: str
    title: str
    summary: str
    fields: list[dict[str, Any]]
    approvals_needed: int = 0
    channel: str = ""
    thread_ts: str = ""


@dataclass(frozen=True)
class OutboxItem:
    id: int
    key: str
    kind: str
    payload: dict[str, Any]
    attempts: int
    next_at: datetime


@dataclass(frozen=True)
class InboxItem:
    id: int
    source: str
    key: str
    payload: dict[str, Any]
    received_at: datetime


class OpenRequestExists(Exception):
    """The intent already has an open request (maybe another replica's, still opening its PR)."""

    def __init__(self, existing: Request) -> None:
        super().__init__(f"{existing.intent_key} already has open request {existing.id}")
        self.existing = existing


class Store(Protocol):
    """Requests with their audit trail, approvals, and the inbox/outbox that make intake durable.

    Implementations: SQLite (default) and PostgreSQL, tested by one shared suite.
    """

    # requests ---------------------------------------------------------------------------------
    def create_request(self, new: NewRequest) -> Request:
        """Insert a proposed request and its first transition; the id is generated here.

        Raises OpenRequestExists when the intent already has an open (proposed/approved) request.
        """
        ...

    def get_request(self, request_id: str) -> Request | None: ...

    def find_open_request(self, intent_key: str) -> Request | None:
        """The open (proposed/approved) request for this intent key, if any."""
        ...

    def find_request_by_pr(self, forge: str, pr_number: int) -> Request | None: ...

    def find_request_by_branch(self, branch: str) -> Request | None: ...

    def list_requests(
        self,
        *,
        states: Sequence[RequestState] | None = None,
        app: str | None = None,
        env: str | None = None,
        limit: int = 50,
    ) -> list[Request]:
        """Newest first."""
        ...

    def update_request(self, request_id: str, **fields: Any) -> Request:
        """Set non-state fields (pr_number, pr_url, head_sha, channel, thread_ts, ...)."""
        ...

    def transition(
        self,
        request_id: str,
        to_state: RequestState,
        actor: str,
        detail: str = "",
        **fields: Any,
    ) -> Request | None:
        """Move to `to_state` atomically if TRANSITIONS allows it from the current state.

        Returns the updated request, or None when the move is not allowed (already there, or a
        final state): that is how redeliveries and double clicks become no-ops.
        """
        ...

    def transitions(self, request_id: str) -> list[Transition]: ...

    # approvals --------------------------------------------------------------------------------
    def claim_thread(self, request_id: str, owner: str) -> bool:
        """True for exactly one caller per request (across replicas): it posts the thread root."""
        ...

    def release_thread(self, request_id: str, owner: str) -> None:
        """Undo `owner`'s claim (its root could not be posted), so a later ask may post one."""
        ...

    def add_approval(
        self, request_id: str, approver: str, source: str, head_sha: str = "", effect: Sequence[Sequence[str]] = ()
    ) -> bool:
        """False when this approver already approved this request. `head_sha`/`effect`: what was reviewed."""
        ...

    def clear_approvals(self, request_id: str) -> int: ...

    def rebind_approvals(self, request_id: str, head_sha: str, effect: Sequence[Sequence[str]]) -> int:
        """Move approvals to a new head opsbot made with the same effect (a rebase that changed nothing)."""
        ...

    def approvals(self, request_id: str) -> list[Approval]: ...

    # inbox (webhook and event intake) -------------------------------------------------------------
    def inbox_add(self, source: str, key: str, payload: dict[str, Any]) -> bool:
        """Store an inbound event before acknowledging it; False when the key was seen before."""
        ...

    def inbox_pending(self, limit: int = 100) -> list[InboxItem]: ...

    def inbox_done(self, item_id: int) -> None: ...

    # outbox (posts to chat) ---------------------------------------------------------------------
    def outbox_add(self, key: str, kind: str, payload: dict[str, Any]) -> bool:
        """Queue a post; False when one with this key exists already (never post twice)."""
        ...

    def outbox_due(self, now: datetime, limit: int = 50) -> list[OutboxItem]: ...

    def outbox_claim(self, now: datetime, owner: str, lease_seconds: float, limit: int = 50) -> list[OutboxItem]:
        """Due items claimed for this worker only (so replicas never post one item twice)."""
        ...

    def outbox_done(self, item_id: int, result: dict[str, Any] | None = None) -> None: ...

    def outbox_retry(self, item_id: int, next_at: datetime, error: str) -> None: ...

    def outbox_result(self, key: str) -> dict[str, Any] | None:
        """The result stored when an item was posted (e.g. the message ts), or None."""
        ...

    # key/value (mirror freshness, cached user groups, thread of a request) -------------------------
    def kv_get(self, key: str) -> str | None: ...

    def kv_set(self, key: str, value: str) -> None: ...

    # audit and policy state (opsbot/store/policy.py; docs/policies.md) --------------------------
    def audit_add(self, entry: NewAudit) -> AuditEntry:
        """Append one audit row. There is deliberately no way to update or delete one."""
        ...

    def audit_list(
        self,
        *,
        app: str | None = None,
        env: str | None = None,
        since: datetime | None = None,
        request_id: str | None = None,
        limit: int = 1000,
    ) -> list[AuditEntry]:
        """The newest `limit` matching rows, oldest first."""
        ...

    def freeze_add(
        self, env: str, set_by: str, reason: str, started_at: datetime, ends_at: datetime | None
    ) -> Freeze: ...

    def freezes_active(self, now: datetime, env: str | None = None) -> list[Freeze]: ...

    def freeze_lift(self, env: str, by: str, now: datetime) -> list[Freeze]: ...

    def lock_take(
        self, app: str, env: str, holder: str, reason: str, link: str, now: datetime
    ) -> tuple[Lock, bool]: ...

    def lock_get(self, app: str, env: str) -> Lock | None: ...

    def locks_active(self, env: str | None = None) -> list[Lock]: ...

    def lock_release(self, app: str, env: str, by: str, now: datetime) -> Lock | None: ...

    def revert_claim(self, request_id: str) -> bool:
        """Claim the one automatic revert of a failed request; False when claimed before."""
        ...

    def revert_set(self, request_id: str, revert_request_id: str) -> None: ...

    def revert_of(self, request_id: str) -> str | None: ...

    def is_revert(self, request_id: str) -> bool: ...

    def ping(self) -> bool: ...

    def close(self) -> None: ...


class ChatPoster(Protocol):
    """What the outbox worker needs from a chat platform (Slack implements it in opsbot.chat.slack.poster)."""

    async def post(
        self,
        channel: str,
        text: str,
        blocks: list[dict[str, Any]] | None = None,
        thread_ts: str | None = None,
    ) -> str:
        """Post a message; return its ts. Raise TemporaryError (retry) or PermanentError."""
        ...

    async def update(
        self, channel: str, ts: str, text: str, blocks: list[dict[str, Any]] | None = None
    ) -> None: ...

    async def ephemeral(
        self, channel: str, user: str, text: str, blocks: list[dict[str, Any]] | None = None
    ) -> None: ...


@dataclass(frozen=True)
class LiveWorkload:
    """What a workload runs in a cluster right now, as `status` shows it next to what Git says."""

    cluster: str
    namespace: str
    kind: str  # Deployment | StatefulSet
    name: str
    replicas: int  # desired (spec.replicas)
    ready_replicas: int
    updated_replicas: int
    #: (container name, image) of the pod template, init containers first
    containers: tuple[tuple[str, str], ...]
    #: the controller has seen the latest spec and every replica is updated and ready
    rolled_out: bool

    @property
    def images(self) -> tuple[str, ...]:
        return tuple(image for _, image in self.containers)


class LiveReader(Protocol):
    """Reads workloads from the clusters opsbot can reach (opsbot.kube.live on Kubernetes).

    Why a port: `status` must show the live side without commands importing a cluster client, and
    tests can hand it any reader.
    """

    def covers(self, cluster: str) -> bool:
        """Whether this reader has a connection configured for `cluster` (no network call)."""
        ...

    def read(self, cluster: str, namespace: str, kind: str, name: str) -> LiveWorkload | None:
        """The workload, or None when it does not exist there.

        Raises TemporaryError (unreachable, timed out) or PermanentError (credentials refused), and
        returns within a few seconds: a person is waiting for the answer.
        """
        ...

