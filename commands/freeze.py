"""`freeze <env> [for <duration>] [because <reason>]`: hold merges to an env (not proposals)."""

from __future__ import annotations

from commands._policy import policies
from commands._shared import no_extras, one_word
from opsbot.core.context import Context
from opsbot.core.model import Intent
from opsbot.core.parser import Args, name_word
from opsbot.core.registry import Command
from opsbot.core.results import Info, Result
from opsbot.policy.intents import FreezeEnv
from opsbot.policy.rules import chat_duration

USAGE = "freeze <env> [for <duration>] [because <reason>]"


def parse(args: Args) -> Intent:
    no_extras(args, {"for", "because", "in"}, USAGE)
    env = args.slot("in") if not args.words else one_word(args, "environment", USAGE)
    if env is None:
        env = one_word(args, "environment", USAGE)
    duration = args.slot("for")
    seconds = int(chat_duration(duration).total_seconds()) if duration else None
    return FreezeEnv(name_word(env, "environment"), seconds, args.slot("because") or "")


def run(intent: Intent, ctx: Context) -> Result:
    from datetime import timedelta

    assert isinstance(intent, FreezeEnv)
    duration = timedelta(seconds=intent.seconds) if intent.seconds else None
    text = policies(ctx).freeze(intent.env, ctx.actor, duration, intent.reason)
    return Info(intent, lines=(text,))


COMMAND = Command("freeze", USAGE, "hold merges to an env (proposals go on)", parse, run, kind="policy")
