"""`promote <app> [from <env>] to <env>`: every image (or chart version) of the source env."""

from __future__ import annotations

from commands._shared import no_extras, one_word, plan_and_propose
from opsbot.core.context import Context
from opsbot.core.model import Intent, Promote
from opsbot.core.parser import Args, UsageError, name_word
from opsbot.core.registry import Command
from opsbot.core.results import Result

USAGE = "promote <app> [from <env>] to <env>"


def parse(args: Args) -> Intent:
    no_extras(args, {"from", "to", "in"}, USAGE)
    app = name_word(one_word(args, "app", USAGE), "app")
    target = args.slot("to") or args.slot("in")
    if target is None:
        raise UsageError(f"Say where to, e.g. `promote {app} to production`.", USAGE)
    source = args.slot("from")
    return Promote(
        app, name_word(target, "environment"), name_word(source, "environment") if source else None
    )


def run(intent: Intent, ctx: Context) -> Result:
    return plan_and_propose(intent, ctx)


COMMAND = Command("promote", USAGE, "copy an app's version from one env to the next", parse, run)
