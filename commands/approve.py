"""`approve <request>`: one approval; the requester never counts (four-eyes)."""

from __future__ import annotations

from commands._request import load, parse_request_ref
from opsbot.core.context import Context
from opsbot.core.model import Approve, Intent
from opsbot.core.parser import Args
from opsbot.core.registry import Command
from opsbot.core.results import RequestUpdate, Result
from opsbot.errors import CommandError

USAGE = "approve <request>"


def parse(args: Args) -> Intent:
    return Approve(parse_request_ref(args, USAGE))


def run(intent: Intent, ctx: Context) -> Result:
    requests, req = load(intent, ctx)
    if ctx.settings.approvals_mode == "github":
        raise CommandError(
            f"Approvals for this team are GitHub reviews: approve PR #{req.pr_number} on GitHub ({req.pr_url})."
        )
    done = requests.approve(req, ctx.actor)
    return RequestUpdate(intent, request=done.request, event="approved", message=done.message,
                         events=done.events)


COMMAND = Command("approve", USAGE, "approve a proposed change", parse, run, kind="request")
