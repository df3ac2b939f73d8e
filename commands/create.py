"""`create cluster <name> [from <template>] [key=value ...]`: Cluster API + Flux from a template."""

from __future__ import annotations

from commands._shared import plan_and_propose
from opsbot.core.context import Context
from opsbot.core.model import CreateCluster, Intent
from opsbot.core.parser import Args, UsageError
from opsbot.core.registry import Command
from opsbot.core.results import Result

USAGE = "create cluster <name> [from <template>] [key=value ...]"


def parse(args: Args) -> Intent:
    words = list(args.words)
    if not words or words[0].lower() != "cluster":
        raise UsageError("opsbot can create clusters only.", USAGE)
    words.pop(0)
    if not words:
        raise UsageError("Say the new cluster's name.", USAGE)
    name = words.pop(0)
    if words:
        raise UsageError(f'Unexpected "{words[0]}"; variables go as key=value.', USAGE)
    extra = set(args.slots) - {"from"}
    if extra:
        raise UsageError(f'"{sorted(extra)[0]}" does not go with create cluster.', USAGE)
    seen: set[str] = set()
    for k, _ in args.pairs:
        key = k.upper().replace("-", "_")
        if key in seen:
            raise UsageError(f"{k} is given twice.", USAGE)
        if not key.replace("_", "").isalnum():
            raise UsageError(f'"{k}" is not a variable name.', USAGE)
        seen.add(key)
    return CreateCluster(name, args.slot("from"), tuple(args.pairs))


def run(intent: Intent, ctx: Context) -> Result:
    return plan_and_propose(intent, ctx)


COMMAND = Command("create", USAGE, "add a new cluster (Cluster API manifests and its Flux sync)", parse, run)
