"""`unlock <app> in <env>`: release a lock (the holder's, or anyone's for whom RBAC allows unlock)."""

from __future__ import annotations

from commands._policy import policies
from commands._shared import no_extras, one_word
from opsbot.core.context import Context
from opsbot.core.model import Intent
from opsbot.core.parser import Args, UsageError, name_word
from opsbot.core.registry import Command
from opsbot.core.results import Info, Result
from opsbot.policy.intents import UnlockApp

USAGE = "unlock <app> in <env>"


def parse(args: Args) -> Intent:
    no_extras(args, {"in"}, USAGE)
    app = name_word(one_word(args, "app", USAGE), "app")
    env = args.slot("in")
    if env is None:
        raise UsageError("Say which environment: `in <env>`.", USAGE)
    return UnlockApp(app, name_word(env, "environment"))


def run(intent: Intent, ctx: Context) -> Result:
    assert isinstance(intent, UnlockApp)
    return Info(intent, lines=(policies(ctx).unlock(intent.app, intent.env, ctx.actor),))


COMMAND = Command("unlock", USAGE, "release a lock", parse, run, kind="policy")
