"""`scale <app> <replicas> in <env>` and `scale <app> <min>-<max> in <env>` (HPA bounds)."""

from __future__ import annotations

from commands._shared import no_extras, plan_and_propose
from opsbot.core.context import Context
from opsbot.core.model import Intent, Scale, ScaleBounds
from opsbot.core.parser import Args, UsageError, name_word, whole_number
from opsbot.core.registry import Command
from opsbot.core.results import Result

USAGE = "scale <app> <replicas> in <env>  |  scale <app> <min>-<max> in <env>"


def parse(args: Args) -> Intent:
    no_extras(args, {"in", "to", "replicas"}, USAGE)
    words = list(args.words)
    if not words:
        raise UsageError("Say which app to scale.", USAGE)
    app = name_word(words.pop(0), "app")
    count = args.slot("replicas") or (words.pop(0) if words else None) or args.slot("to")
    if words:
        raise UsageError(f'Unexpected "{words[0]}".', USAGE)
    if count is None:
        raise UsageError(f"Say how many replicas for {app}.", USAGE)
    env = args.slot("in")
    if env is None:
        raise UsageError(f"Say which environment, e.g. `scale {app} {count} in production`.", USAGE)
    env = name_word(env, "environment")
    lo, dash, hi = count.partition("-")
    if dash and lo:
        low, high = whole_number(lo, "min replicas"), whole_number(hi, "max replicas")
        if low < 1:
            raise UsageError("An autoscaler's min replicas must be at least 1.", USAGE)
        if low > high:
            raise UsageError(f"min ({low}) is above max ({high}).", USAGE)
        return ScaleBounds(app, env, low, high)
    return Scale(app, env, whole_number(count, "replicas"))


def run(intent: Intent, ctx: Context) -> Result:
    return plan_and_propose(intent, ctx)


COMMAND = Command(
    "scale", USAGE, "set the replica count (or autoscaler bounds) of an app in an env", parse, run
)
