"""`lock <app> in <env> [because <reason>]`: others' proposals there wait; the holder's go ahead."""

from __future__ import annotations

from commands._policy import policies
from commands._shared import no_extras, one_word
from opsbot.core.context import Context
from opsbot.core.model import Intent
from opsbot.core.parser import Args, UsageError, name_word
from opsbot.core.registry import Command
from opsbot.core.results import Info, Result
from opsbot.policy.intents import LockApp

USAGE = "lock <app> in <env> [because <reason>]"


def parse(args: Args) -> Intent:
    no_extras(args, {"in", "because"}, USAGE)
    app = name_word(one_word(args, "app", USAGE), "app")
    env = args.slot("in")
    if env is None:
        raise UsageError("Say which environment: `in <env>`.", USAGE)
    return LockApp(app, name_word(env, "environment"), args.slot("because") or "")


def run(intent: Intent, ctx: Context) -> Result:
    assert isinstance(intent, LockApp)
    ctx.planner().index.find(intent.app, intent.env)  # a lock on a typo would guard nothing: refuse it
    return Info(intent, lines=(policies(ctx).lock(intent.app, intent.env, ctx.actor, intent.reason),),
                )  # fmt: skip


COMMAND = Command("lock", USAGE, "hold an app in an env for yourself", parse, run, kind="policy")
