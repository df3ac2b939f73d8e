"""`help [<command>]`: the grammar, from the registry itself so it never drifts."""

from __future__ import annotations

from opsbot.core.context import Context
from opsbot.core.model import Help, Intent
from opsbot.core.parser import Args
from opsbot.core.registry import Command
from opsbot.core.results import Info, Result
from opsbot.errors import CommandError

USAGE = "help [<command>]"


def parse(args: Args) -> Intent:
    return Help(args.words[0].lower() if args.words else None)


def run(intent: Intent, ctx: Context) -> Result:
    assert isinstance(intent, Help)
    from commands import REGISTRY

    if intent.topic:
        cmd = REGISTRY.get(intent.topic)
        if cmd is None:
            raise CommandError(f'No command "{intent.topic}". Commands: {", ".join(REGISTRY.names())}.')
        return Info(intent, title=cmd.usage, lines=(cmd.summary,))
    lines = tuple(f"{c.usage:<58} {c.summary}" for c in REGISTRY.commands)
    tail = ("Words are case-insensitive; `--env production` and `env=production` work too.",)
    return Info(intent, title="opsbot commands", lines=lines + tail)


COMMAND = Command("help", USAGE, "this list", parse, run, kind="read")
