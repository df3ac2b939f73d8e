"""`merge <request> [override because <reason>]`: merge exactly the approved head of its PR once
enough approvals are in and no policy holds it back (windows, freezes, gates). An override needs the
`override` role and a reason, and is audited and posted."""

from __future__ import annotations

from commands._request import load
from commands._shared import no_extras
from opsbot.core.context import Context
from opsbot.core.model import Intent, Merge, RequestState
from opsbot.core.parser import Args, UsageError
from opsbot.core.registry import Command
from opsbot.core.results import RequestUpdate, Result
from opsbot.policy.intents import MergeOverride

USAGE = "merge <request> [override because <reason>]"


def parse(args: Args) -> Intent:
    no_extras(args, {"because"}, USAGE)
    words = [w.lower() for w in args.words]
    if not words:
        raise UsageError("Say which request (e.g. R7 or the PR number).", USAGE)
    ref = args.words[0].lstrip("#")
    if words[1:] == ["override"]:
        reason = args.slot("because")
        if not reason:
            raise UsageError(f"An override needs a reason: `merge {ref} override because <reason>`.", USAGE)
        return MergeOverride(ref, reason)
    if len(words) > 1:
        raise UsageError(f'Unexpected "{args.words[1]}".', USAGE)
    if args.slot("because"):
        raise UsageError(f"A reason goes with an override: `merge {ref} override because <reason>`.", USAGE)
    return Merge(ref)


def run(intent: Intent, ctx: Context) -> Result:
    requests, req = load(intent, ctx)
    clearance = None
    if ctx.policies is not None and req.state.is_open:
        override = intent.reason if isinstance(intent, MergeOverride) else None
        clearance = ctx.policies.check_merge(req, ctx.actor, override)
    done = requests.merge(req, ctx.actor, ctx.planner)
    req, message = done.request, done.message
    if ctx.policies is not None and clearance is not None and req.state is RequestState.MERGED:
        message = "\n".join([message, *ctx.policies.merged(req, ctx.actor, clearance)])
    return RequestUpdate(intent, request=req, event="merged", message=message, events=done.events)


COMMAND = Command("merge", USAGE, "merge an approved change", parse, run, kind="request")
