"""Error classes that say who should read them (kopf-style: permanent vs temporary).

A `CommandError` is written for the person who typed the command and is shown verbatim. Anything
else is a bug or an outage: people get a generic reply with a reference id, logs get the detail.
"""

from __future__ import annotations


class OpsbotError(Exception):
    """Base class of every error opsbot raises on purpose."""


class CommandError(OpsbotError):
    """Bad input or a refused change: shown to the requester as is; nothing was changed."""

    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} {self.hint}".strip()


class DeniedError(CommandError):
    """RBAC said no; the message names the missing role."""


class ValidationFailed(CommandError):
    """The validation gate refused the change; no PR was opened."""


class HeadChanged(CommandError):
    """The PR's branch is not at the commit that was approved: nothing merged (GitHub's 409)."""

    def __init__(self, message: str, *, head_sha: str = "", hint: str = "") -> None:
        super().__init__(message, hint=hint)
        self.head_sha = head_sha


class MergeConflict(CommandError):
    """The PR no longer merges cleanly into its base: it must be re-planned, never merged textually."""


class ConfigError(OpsbotError):
    """Settings or `.opsbot.yaml` are wrong; raised at start or at load with the exact key."""


class TemporaryError(OpsbotError):
    """A peer (Slack, GitHub, Git remote) failed in a way that a later retry may fix."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentError(OpsbotError):
    """A peer refused for good (403 without rate limit, 404, 422): told to the requester, not retried."""
