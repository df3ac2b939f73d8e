"""`policies [<env>]`: windows, freezes, locks and gates in force, each with its source."""

from __future__ import annotations

from commands._policy import policies
from commands._shared import no_extras
from opsbot.core.context import Context
from opsbot.core.model import Intent
from opsbot.core.parser import Args, UsageError, name_word
from opsbot.core.registry import Command
from opsbot.core.results import Info, Result
from opsbot.policy.intents import ShowPolicies

USAGE = "policies [<env>]"


def parse(args: Args) -> Intent:
    no_extras(args, {"in"}, USAGE)
    if len(args.words) > 1:
        raise UsageError(f'Unexpected "{args.words[1]}".', USAGE)
    env = args.words[0] if args.words else args.slot("in")
    return ShowPolicies(name_word(env, "environment") if env else None)


def run(intent: Intent, ctx: Context) -> Result:
    assert isinstance(intent, ShowPolicies)
    lines = policies(ctx).listing(intent.env)
    title = f"Policies in {intent.env}" if intent.env else "Policies"
    return Info(intent, title=title, lines=tuple(lines))


COMMAND = Command("policies", USAGE, "windows, freezes, locks and gates in force", parse, run, kind="read")
