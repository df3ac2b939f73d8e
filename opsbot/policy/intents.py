"""The policy verbs as intents (DESIGN §3): freeze, unfreeze, lock, unlock, policies, audit, and
`merge <request> override because <reason>`."""

from __future__ import annotations

from dataclasses import dataclass

from opsbot.core.model import Intent, Merge


@dataclass(frozen=True)
class FreezeEnv(Intent):
    env: str
    seconds: int | None = None  # None: until unfreeze
    reason: str = ""

    @property
    def verb(self) -> str:
        return "freeze"


@dataclass(frozen=True)
class UnfreezeEnv(Intent):
    env: str

    @property
    def verb(self) -> str:
        return "unfreeze"


@dataclass(frozen=True)
class LockApp(Intent):
    app: str
    env: str
    reason: str = ""

    @property
    def verb(self) -> str:
        return "lock"


@dataclass(frozen=True)
class UnlockApp(Intent):
    app: str
    env: str

    @property
    def verb(self) -> str:
        return "unlock"


@dataclass(frozen=True)
class ShowPolicies(Intent):
    env: str | None = None

    @property
    def verb(self) -> str:
        return "policies"


@dataclass(frozen=True)
class ShowAudit(Intent):
    app: str | None = None
    env: str | None = None
    since: str | None = None  # ISO date or date-time, as typed

    @property
    def verb(self) -> str:
        return "audit"


@dataclass(frozen=True)
class MergeOverride(Merge):
    """A merge past windows, freezes and gates: the `override` role, a reason, an audit row."""

    reason: str = ""

    @property
    def verb(self) -> str:
        return "merge"
