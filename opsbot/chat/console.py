"""A chat transport in the terminal: what opsbot would post in Slack, as text.

Used by `opsbot testdrive` and by transcript tests (errbot's test backend taught us this):
`console.say("scale frontend 5 in production", user="alice")` returns the Result and records the
lines opsbot would have posted, thread replies included.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from opsbot.core.model import Actor, Request, Thread
from opsbot.core.results import Failure, Info, NoChange, Proposed, RequestUpdate, Result
from opsbot.core.wording import count

#: Diff lines the console shows of a proposal; the rest is counted ("… (N more lines)").
DIFF_LINES = 20
SAMPLE = Path(__file__).resolve().parent.parent / "samples" / "fleet"

THREAD_EMOJI = {
    "approved": "✅",
    "merged": "🔀",
    "closed": "🚫",
    "superseded": "♻️",
    "deployed": "🚀",
    "failed": "❌",
}


@dataclass
class Console:
    bot: Any  # opsbot.app.Opsbot; typed loosely to keep the console free of the composition root
    out: TextIO = sys.stdout
    channel: str = "C-console"
    transcript: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.bot.on_transition(self._on_transition)

    def emit(self, line: str) -> None:
        self.transcript.append(line)
        print(line, file=self.out)

    def say(self, text: str, user: str = "alice") -> Result:
        self.emit(f"@{user}> /ops {text}")
        result = self.bot.handle(text, Actor(user, user, "chat"), Thread(self.channel))
        self.emit(render(result))
        return result

    def _on_transition(self, request: Request, event: str, facts: dict[str, Any]) -> None:
        who = facts.get("by", "")
        extra = f" {facts['sha'][:7]}" if facts.get("sha") else ""
        self.emit(f"  ↳ thread {request.id}: {THREAD_EMOJI.get(event, '•')} {event} by @{who}{extra}")


def render(result: Result) -> str:
    """The plain-text face of a result (the Slack fallback text, chat-shaped), mentions as @name."""
    return re.sub(r"<@([^>|]+)>", r"@\1", _render(result))


def _render(result: Result) -> str:
    if isinstance(result, Failure):
        return f"opsbot (only you see this): {result.text()}"
    if isinstance(result, Proposed):
        assert result.change is not None
        lines = [f"opsbot: 📦 {result.change.title}"]
        for f in result.change.fields:
            lines.append(
                f"   {f.app} · {f.env} · {f.field} {f.old if f.old is not None else '(unset)'} → {f.new}"
            )
        lines.append("   " + "  ".join(f"{'✅' if c.ok else '❌'} {c.name}" for c in result.change.checks))
        for n in result.change.notes:
            lines.append(f"   note: {n}")
        diff = result.diff.splitlines()
        for ln in diff[:DIFF_LINES]:
            lines.append(f"   │ {ln}")
        if len(diff) > DIFF_LINES:
            lines.append(f"   │ … ({count(len(diff) - DIFF_LINES, 'more line')})")
        if result.pr and result.request:
            word = "already open" if result.existing else "opened"
            need = result.request.approvals_needed
            lines.append(
                f"   PR #{result.pr.number} {word} · request {result.request.id} · "
                f"{'needs ' + count(need, 'approval') if need else 'ready to merge'} "
                f"[Review PR] [Approve] [Merge] [Cancel]"
            )
        return "\n".join(lines)
    if isinstance(result, RequestUpdate | NoChange):
        return f"opsbot: {result.text()}"
    if isinstance(result, Info):
        return "opsbot: " + result.text().replace("\n", "\n   ")
    return f"opsbot: {result.text()}"


def make_sample_repo(dest: Path) -> Path:
    """The testdrive's fleet repo: the bundled sample, with one earlier release in its history."""
    if dest.exists() and any(dest.iterdir()):
        raise FileExistsError(f"{dest} exists and is not empty")
    shutil.copytree(SAMPLE, dest, dirs_exist_ok=True)

    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(dest), *args], check=True, capture_output=True)

    git("init", "-q", "-b", "main")
    git("config", "user.name", "Testdrive")
    git("config", "user.email", "testdrive@example.com")
    prod = dest / "overlays" / "production" / "kustomization.yaml"
    current = prod.read_text()
    prod.write_text(current.replace('newTag: "1.4.2"', 'newTag: "1.4.1"', 1))
    git("add", "-A")
    git("commit", "-q", "-m", "Fleet: frontend 1.4.1 in production")
    prod.write_text(current)
    git("commit", "-q", "-am", "Release frontend 1.4.2 to production")
    return dest


def walkthrough(console: Console, pause: Callable[[str], None] = lambda s: None) -> None:
    say = console.say
    console.emit("— opsbot testdrive: everything below runs for real on a local Git repo and SQLite —")
    say("status frontend")
    pause("alice asks opsbot to scale the frontend in production")
    result = say("scale frontend 5 in production")
    req = result.request.id if isinstance(result, Proposed) and result.request else "R1"
    pause("alice cannot approve her own change (four-eyes)")
    say(f"approve {req}")
    pause("bob approves and merges")
    say(f"approve {req}", user="bob")
    say(f"merge {req}", user="bob")
    say("status frontend in production")
    console.emit("— done: `git log` in the repo shows opsbot's merge commit —")
