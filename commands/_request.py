"""What approve, merge and cancel share: find the request, check the forge and store are there."""

from __future__ import annotations

from commands._shared import no_extras, one_word
from opsbot.core.context import Context
from opsbot.core.model import Intent, Request, intent_request
from opsbot.core.parser import Args
from opsbot.core.requests import RequestLifecycle
from opsbot.errors import CommandError


def parse_request_ref(args: Args, usage: str) -> str:
    no_extras(args, set(), usage)
    ref = one_word(args, "request (e.g. R7 or the PR number)", usage)
    return ref.lstrip("#")


def load(intent: Intent, ctx: Context) -> tuple[RequestLifecycle, Request]:
    if ctx.requests is None:
        raise CommandError("This needs the request store; use `opsbot run`, the console or Slack.")
    return ctx.requests, ctx.requests.get(intent_request(intent) or "")
