"""One parser for Slack, the CLI and the console: words in, `Args` out, never an exception but
`UsageError` (a CommandError carrying the usage text and a "did you mean").

The grammar is in DESIGN §3. Keywords (`in`, `to`, `from`) and options (`--env production`,
`env=production`) fill the same named slots, so every spelling reaches the same intent.
"""

from __future__ import annotations

import difflib
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field

from opsbot.errors import CommandError

MAX_COMMAND_LENGTH = 1000
#: Unicode categories refused in a command: controls (C0, DEL, C1), format characters (bidi
#: overrides, zero-width spaces), surrogates and private-use characters.
_INVISIBLE = frozenset({"Cc", "Cf", "Cs", "Co"})
#: ... except whitespace, and the zero-width joiner that emoji in a reason are made of.
_ALLOWED = frozenset("\t\n\r\u200d")

KEYWORDS = {"in": "in", "on": "in", "to": "to", "from": "from", "for": "for", "since": "since"}
#: Takes the rest of the line as free text (a reason may be many words): `freeze prod because the
#: load test runs`. Commands that take no reason refuse the slot like any other stray keyword.
REST_KEYWORDS = {"because": "because"}
#: option name -> slot
OPTIONS = {
    "env": "in",
    "environment": "in",
    "in": "in",
    "to": "to",
    "from": "from",
    "source": "from",
    "template": "from",
    "replicas": "replicas",
    "version": "version",
    "tag": "version",
    "since": "since",
    "for": "for",
    "reason": "because",
    "because": "because",
}


class UsageError(CommandError):
    """Wrong words: carries the usage of the command the person meant."""

    def __init__(self, message: str, usage: str = "", suggestion: str = "") -> None:
        hint = " ".join(
            x
            for x in (f"Did you mean {suggestion}?" if suggestion else "", f"Usage: {usage}" if usage else "")
            if x
        )
        super().__init__(message, hint=hint)
        self.usage = usage
        self.suggestion = suggestion


@dataclass
class Args:
    """A command line split into its verb, positional words, keyword slots and key=value pairs."""

    verb: str
    words: list[str] = field(default_factory=list)
    slots: dict[str, str] = field(default_factory=dict)
    pairs: list[tuple[str, str]] = field(default_factory=list)
    raw: str = ""

    def slot(self, name: str) -> str | None:
        return self.slots.get(name)


def tokenize(text: str) -> list[str]:
    if len(text) > MAX_COMMAND_LENGTH:
        raise CommandError(
            f"That command is {len(text)} characters long; opsbot reads at most {MAX_COMMAND_LENGTH}."
        )
    bad = next((c for c in text if c not in _ALLOWED and unicodedata.category(c) in _INVISIBLE), None)
    if bad is not None:
        # Why invisible format characters too: a bidi override or a zero-width space makes what
        # the person (and the reviewer) read differ from what opsbot would act on.
        raise CommandError(
            f"That command contains a control or invisible character (U+{ord(bad):04X}); type it as plain text."
        )
    # Slack may send typographic quotes and non-breaking spaces from copy-paste.
    cleaned = text.replace("\u00a0", " ").replace("\u201c", '"').replace("\u201d", '"').replace("\u2019", "'")
    return [t.strip("\"'`") for t in cleaned.split() if t.strip("\"'`")]


def split(text: str, verbs: Sequence[str]) -> Args:
    """Split `text` into Args; the verb is matched case-insensitively against `verbs`."""
    tokens = tokenize(text)
    if tokens and tokens[0].lower() in ("/ops", "ops"):
        tokens = tokens[1:]
    if not tokens:
        return Args(verb="help", raw=text)
    verb = tokens[0].lower()
    rest = tokens[1:]
    if verb not in verbs:
        near = difflib.get_close_matches(verb, list(verbs), n=1, cutoff=0.6)
        raise (
            UsageError(
                f'Unknown command "{tokens[0]}".',
                usage="",
                suggestion=f'"{near[0]}"' if near else "",
            )
            if near
            else CommandError(
                f'Unknown command "{tokens[0]}". Commands: {", ".join(sorted(verbs))}.',
                hint="Type `help` for the grammar.",
            )
        )
    args = Args(verb=verb, raw=text)
    i = 0
    while i < len(rest):
        tok = rest[i]
        low = tok.lower()
        if low.startswith("--"):
            name, eq, value = low[2:].partition("=")
            if not eq:
                if i + 1 >= len(rest):
                    raise CommandError(f"Option --{name} needs a value.")
                value = rest[i + 1]
                i += 1
            else:
                value = tok[2 + len(name) + 1 :]
            if name not in OPTIONS:
                raise CommandError(
                    f"Unknown option --{name}. Options: {', '.join('--' + o for o in sorted(set(OPTIONS)))}."
                )
            _fill(args, OPTIONS[name], value)
        elif low in REST_KEYWORDS:
            reason = " ".join(rest[i + 1 :]).strip()
            if not reason:
                raise CommandError(f"`{low}` needs a reason after it.")
            _fill(args, REST_KEYWORDS[low], reason)
            break
        elif low in KEYWORDS and i + 1 < len(rest):
            _fill(args, KEYWORDS[low], rest[i + 1])
            i += 1
        elif "=" in tok and not tok.startswith("="):
            key, _, value = tok.partition("=")
            if key.lower() in OPTIONS and verb != "create":
                _fill(args, OPTIONS[key.lower()], value)
            else:
                if not value:
                    raise CommandError(f"{key}= needs a value.")
                args.pairs.append((key, value))
        else:
            args.words.append(tok)
        i += 1
    return args


def _fill(args: Args, slot: str, value: str) -> None:
    if not value:
        raise CommandError(f"`{slot}` needs a value.")
    if slot in args.slots and args.slots[slot] != value:
        raise CommandError(f'"{slot}" is given twice ({args.slots[slot]} and {value}); give it once.')
    args.slots[slot] = value


def name_word(value: str, what: str) -> str:
    """App and env names: Kubernetes-style names, compared in lower case."""
    v = value.lower()
    # ASCII only: Kubernetes names are, and look-alike letters (Cyrillic "а") must not pass as names.
    if not v or len(v) > 253 or not all((c.isascii() and c.isalnum()) or c in "-._" for c in v):
        raise CommandError(f'"{value}" is not a valid {what} name: use letters, digits, "-", "." and "_".')
    return v


def whole_number(value: str, what: str) -> int:
    v = value.strip()
    # `isdigit` is true for "²", "①" and fullwidth digits, which `int` rejects or reads differently:
    # only ASCII digits are numbers here.
    if v.startswith("-") and v[1:].isascii() and v[1:].isdigit():
        raise CommandError(f"{what} must be 0 or more, not {v}.")
    if not (v.isascii() and v.isdigit()) or len(v) > 6:
        raise CommandError(f'{what} must be a whole number, not "{value}".')
    return int(v)
