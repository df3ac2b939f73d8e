"""`cancel <request>`: close its PR; nothing is merged."""

from __future__ import annotations

from commands._request import load, parse_request_ref
from opsbot.core.context import Context
from opsbot.core.model import Cancel, Intent
from opsbot.core.parser import Args
from opsbot.core.registry import Command
from opsbot.core.results import RequestUpdate, Result

USAGE = "cancel <request>"


def parse(args: Args) -> Intent:
    return Cancel(parse_request_ref(args, USAGE))


def run(intent: Intent, ctx: Context) -> Result:
    requests, req = load(intent, ctx)
    done = requests.cancel(req, ctx.actor)
    return RequestUpdate(intent, request=done.request, event="closed", message=done.message,
                         events=done.events)


COMMAND = Command(
    "cancel", USAGE, "close a proposed change without merging", parse, run, kind="request", aliases=("close",)
)
