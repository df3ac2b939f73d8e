"""`merge <request>`: merge exactly the approved head of its PR once enough approvals are in."""

from __future__ import annotations

from commands._request import load, parse_request_ref
from opsbot.core.context import Context
from opsbot.core.model import Intent, Merge
from opsbot.core.parser import Args
from opsbot.core.registry import Command
from opsbot.core.results import RequestUpdate, Result

USAGE = "merge <request>"


def parse(args: Args) -> Intent:
    return Merge(parse_request_ref(args, USAGE))


def run(intent: Intent, ctx: Context) -> Result:
    requests, req = load(intent, ctx)
    done = requests.merge(req, ctx.actor, ctx.planner)
    return RequestUpdate(intent, request=done.request, event="merged", message=done.message,
                         events=done.events)


COMMAND = Command("merge", USAGE, "merge an approved change", parse, run, kind="request")
