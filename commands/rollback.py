"""`rollback <app> in <env> [to <version>]`: by default the version before the current one."""

from __future__ import annotations

from commands._shared import no_extras, one_word, plan_and_propose
from opsbot.core.context import Context
from opsbot.core.model import Intent, Rollback
from opsbot.core.parser import Args, UsageError, name_word
from opsbot.core.registry import Command
from opsbot.core.results import Result

USAGE = "rollback <app> in <env> [to <version>]"


def parse(args: Args) -> Intent:
    no_extras(args, {"in", "to", "version"}, USAGE)
    app = name_word(one_word(args, "app", USAGE), "app")
    env = args.slot("in")
    if env is None:
        raise UsageError(f"Say which environment, e.g. `rollback {app} in production`.", USAGE)
    version = args.slot("to") or args.slot("version")
    return Rollback(app, name_word(env, "environment"), version)


def run(intent: Intent, ctx: Context) -> Result:
    return plan_and_propose(intent, ctx)


COMMAND = Command(
    "rollback", USAGE, "go back to the previous version from Git history", parse, run, aliases=("roll-back",)
)
