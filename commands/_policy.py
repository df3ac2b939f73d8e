"""What the policy commands share: the Policies service from the context, and reading a date."""

from __future__ import annotations

from datetime import UTC, datetime

from opsbot.core.context import Context
from opsbot.errors import CommandError
from opsbot.policy.engine import Policies


def policies(ctx: Context) -> Policies:
    if ctx.policies is None:
        raise CommandError("Policies need the request store; use `opsbot run`, the console or Slack.")
    return ctx.policies


def parse_since(text: str) -> datetime:
    """`2026-12-01` or `2026-12-01T17:00` (UTC unless it says otherwise)."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise CommandError(f'"{text}" is not a date: use YYYY-MM-DD or YYYY-MM-DDTHH:MM.') from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
