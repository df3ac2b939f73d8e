"""What the change commands share: plan, then (for `run`) propose, and say it in one Result."""

from __future__ import annotations

from opsbot.core.context import Context
from opsbot.core.model import Intent, intent_env
from opsbot.core.parser import Args, UsageError
from opsbot.core.results import NoChange, Proposed, Result
from opsbot.manifests.planner import NothingToDo, unified_diff


def plan_and_propose(intent: Intent, ctx: Context) -> Result:
    planner = ctx.planner()
    try:
        change = planner.plan(intent)
    except NothingToDo as exc:
        return NoChange(intent, message=exc.message)
    diff = unified_diff(list(change.edits))
    if not ctx.apply or ctx.requests is None:
        return Proposed(intent, change=change, diff=diff)
    env_name = intent_env(intent)
    env = planner.config.envs.get(env_name) if env_name else None
    approvals = env.approvals if env else 0
    thread = ctx.thread
    if ctx.policies is not None:
        ctx.policies.check_propose(change.app, change.env, ctx.actor)
    proposal = ctx.requests.propose(
        change,
        ctx.command_text,
        ctx.actor,
        approvals,
        channel=thread.channel if thread else "",
        thread_ts=(thread.ts or "") if thread else "",
    )
    if ctx.policies is not None and not proposal.existing:
        ctx.policies.after_propose(proposal.request)
    return Proposed(
        intent, change=change, diff=diff, pr=proposal.pr, request=proposal.request, existing=proposal.existing
    )


def one_word(args: Args, what: str, usage: str) -> str:
    if not args.words:
        raise UsageError(f"Say which {what}.", usage)
    if len(args.words) > 1:
        raise UsageError(f'Unexpected "{args.words[1]}".', usage)
    return args.words[0]


def no_extras(args: Args, allowed_slots: set[str], usage: str) -> None:
    extra = set(args.slots) - allowed_slots
    if extra:
        raise UsageError(f'"{sorted(extra)[0]}" does not go with {args.verb}.', usage)
    if args.pairs:
        raise UsageError(f'Unexpected "{args.pairs[0][0]}={args.pairs[0][1]}".', usage)
