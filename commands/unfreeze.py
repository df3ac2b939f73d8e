"""`unfreeze <env>`: lift the chat freezes of an env (config windows stay)."""

from __future__ import annotations

from commands._policy import policies
from commands._shared import no_extras, one_word
from opsbot.core.context import Context
from opsbot.core.model import Intent
from opsbot.core.parser import Args, name_word
from opsbot.core.registry import Command
from opsbot.core.results import Info, Result
from opsbot.policy.intents import UnfreezeEnv

USAGE = "unfreeze <env>"


def parse(args: Args) -> Intent:
    no_extras(args, {"in"}, USAGE)
    env = args.slot("in") if not args.words else one_word(args, "environment", USAGE)
    return UnfreezeEnv(name_word(env or one_word(args, "environment", USAGE), "environment"))


def run(intent: Intent, ctx: Context) -> Result:
    assert isinstance(intent, UnfreezeEnv)
    return Info(intent, lines=(policies(ctx).unfreeze(intent.env, ctx.actor),))


COMMAND = Command("unfreeze", USAGE, "lift a freeze", parse, run, kind="policy")
