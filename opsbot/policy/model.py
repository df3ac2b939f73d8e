"""The nouns of policies, as plain data: audit rows, freezes, locks, windows, gates, and blocks."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

#: Audit actions written by opsbot. Request transitions use their target state's name.
AUDIT_ACTIONS = (
    "proposed", "opened", "approved", "approval", "clear", "merged", "deployed", "failed", "closed",
    "superseded", "override", "freeze", "unfreeze", "lock", "unlock", "gate", "revert", "blocked",
)  # fmt: skip


@dataclass(frozen=True)
class NewAudit:
    """One audit row to append: who did what, to which request/PR, and why."""

    actor: str
    action: str
    request_id: str = ""
    pr_number: int | None = None
    app: str = ""
    env: str = ""
    reason: str = ""
    detail: str = ""


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: datetime
    actor: str
    action: str
    request_id: str
    pr_number: int | None
    app: str
    env: str
    reason: str
    detail: str

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "at": self.at.isoformat(),
            "actor": self.actor,
            "action": self.action,
            "request": self.request_id,
            "pr": self.pr_number,
            "app": self.app,
            "env": self.env,
            "reason": self.reason,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class Freeze:
    """A chat freeze of one env: blocks merges there from `started_at` until `ends_at` (or unfreeze)."""

    id: int
    env: str
    set_by: str
    reason: str
    started_at: datetime
    ends_at: datetime | None
    lifted_at: datetime | None = None
    lifted_by: str = ""

    def active(self, now: datetime) -> bool:
        return self.lifted_at is None and self.started_at <= now and (self.ends_at is None or now < self.ends_at)


@dataclass(frozen=True)
class Lock:
    """An app/env held by one person: others' proposals there are refused until unlock."""

    id: int
    app: str
    env: str
    holder: str
    reason: str
    since: datetime
    link: str = ""


@dataclass(frozen=True)
class Window:
    """Argo CD sync-window shape: a cron start, a duration, a zone; deny blocks, allow permits."""

    kind: str  # deny | allow
    schedule: str
    duration: timedelta
    timezone: str = "UTC"
    reason: str = ""


@dataclass(frozen=True)
class Gate:
    """A PromQL expression that must hold before a merge (for promotions, or for all merges)."""

    name: str
    query: str
    applies_to: str = "promote"  # promote | all


@dataclass(frozen=True)
class GateResult:
    gate: Gate
    outcome: str  # pass | fail | unknown
    detail: str

    @property
    def passed(self) -> bool:
        return self.outcome == "pass"


@dataclass(frozen=True)
class Block:
    """Why a merge may not happen now: what blocks it, who set it, why, and until when."""

    source: str  # window | freeze | gate
    what: str
    who: str = ""
    reason: str = ""
    until: datetime | None = None
    gates: tuple[GateResult, ...] = field(default_factory=tuple)
