"""The explicit list of commands: how each parses and runs. No decorators, no import magic.

A `Command` pairs a parse function (Args -> Intent) with a run function (Intent, Context -> Result);
`Registry` turns text into (Command, Intent) with one parser for every transport.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from opsbot.core.model import Intent
from opsbot.core.parser import Args, UsageError, split

if TYPE_CHECKING:
    from opsbot.core.context import Context
    from opsbot.core.results import Result


@dataclass(frozen=True)
class Command:
    name: str
    usage: str
    summary: str
    parse: Callable[[Args], Intent]
    run: Callable[[Intent, Context], Result]
    #: "change" commands edit the repo; "request" commands act on a request; "read" commands only read.
    kind: str = "change"
    aliases: tuple[str, ...] = ()


class Registry:
    def __init__(self, commands: Sequence[Command]) -> None:
        self.commands = list(commands)
        self._by_name: dict[str, Command] = {}
        for c in commands:
            for n in (c.name, *c.aliases):
                if n in self._by_name:
                    raise ValueError(f"two commands named {n}")
                self._by_name[n] = c

    def names(self) -> list[str]:
        return [c.name for c in self.commands]

    def get(self, name: str) -> Command | None:
        return self._by_name.get(name)

    def parse(self, text: str) -> tuple[Command, Intent]:
        args = split(text, list(self._by_name))
        command = self._by_name[args.verb]
        try:
            return command, command.parse(args)
        except UsageError as exc:
            if not exc.usage:
                raise UsageError(exc.message, usage=command.usage, suggestion=exc.suggestion) from None
            raise
