"""`deploy <app> <version> to <env>`: an explicit image tag (or chart version for a HelmRelease)."""

from __future__ import annotations

from commands._shared import no_extras, plan_and_propose
from opsbot.core.context import Context
from opsbot.core.model import Deploy, Intent
from opsbot.core.parser import Args, UsageError, name_word
from opsbot.core.registry import Command
from opsbot.core.results import Result

USAGE = "deploy <app> <version> to <env>"


def parse(args: Args) -> Intent:
    no_extras(args, {"to", "in", "version"}, USAGE)
    words = list(args.words)
    if not words:
        raise UsageError("Say which app to deploy.", USAGE)
    app = name_word(words.pop(0), "app")
    version = args.slot("version") or (words.pop(0) if words else None)
    if words:
        raise UsageError(f'Unexpected "{words[0]}".', USAGE)
    if not version:
        raise UsageError(f"Say which version of {app}.", USAGE)
    env = args.slot("to") or args.slot("in")
    if env is None:
        raise UsageError(f"Say where to, e.g. `deploy {app} {version} to staging`.", USAGE)
    return Deploy(app, version.lstrip(":"), name_word(env, "environment"))


def run(intent: Intent, ctx: Context) -> Result:
    return plan_and_propose(intent, ctx)


COMMAND = Command("deploy", USAGE, "set an app's image tag or chart version in an env", parse, run)
