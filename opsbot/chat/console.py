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

from opsbot.chat.texts import plain
from opsbot.core.model import Actor, Request, Thread
from opsbot.core.results import Failure, Info, NoChange, Proposed, RequestUpdate, Result
from opsbot.core.wording import count
from opsbot.notify.outbox import OutboxWorker, save_root

#: Diff lines the console shows of a proposal; the rest is counted ("… (N more lines)").
DIFF_LINES = 20
DIFF_PREFIX = "   │ "
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
    #: thread root ts → request id, for the replies `deliver_outbox` prints
    threads: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.bot.on_transition(self._on_transition)

    def emit(self, line: str) -> None:
        self.transcript.append(line)
        print(line, file=self.out)

    def say(self, text: str, user: str = "alice") -> Result:
        self.emit(f"@{user}> /ops {text}")
        result = self.bot.handle(text, Actor(user, user, "chat"), Thread(self.channel))
        self.emit(render(result))
        if isinstance(result, Proposed) and result.request is not None and not result.existing:
            # what Slack's root message is: the thread later replies (a deploy, say) are posted in
            ts = f"{len(self.transcript)}.000000"
            self.threads[ts] = result.request.id
            save_root(self.bot.store, result.request.id, self.channel, ts, [])
        return result

    async def deliver_outbox(self) -> int:
        """Post what is queued for chat (deploy replies, deploy-channel lines) here, as Slack would."""
        worker = OutboxWorker(self.bot.store, ConsolePoster(self))
        try:
            return await worker.drain_until_idle()
        finally:
            worker.close()

    def _on_transition(self, request: Request, event: str, facts: dict[str, Any]) -> None:
        if facts.get("posted"):  # its words are already queued (a deploy outcome): the outbox shows them
            return
        if event == "policy":  # freezes, overrides, gate results, auto-revert: their own words
            text = re.sub(r"<@([^>|]+)>", r"@\1", str(facts.get("text", "")))
            self.emit(f"  ↳ thread {request.id}: 🛡️ {text}")
            return
        who = facts.get("by", "")
        extra = f" {facts['sha'][:7]}" if facts.get("sha") else ""
        self.emit(f"  ↳ thread {request.id}: {THREAD_EMOJI.get(event, '•')} {event} by @{who}{extra}")


@dataclass
class ConsolePoster:
    """`ChatPoster` for the terminal: thread replies under their request, channel lines by channel."""

    console: Console

    async def post(self, channel: str, text: str, blocks: list[dict[str, Any]] | None = None,
                   thread_ts: str | None = None) -> str:
        line = terminal(text)
        if thread_ts and thread_ts in self.console.threads:
            self.console.emit(f"  ↳ thread {self.console.threads[thread_ts]}: {line}")
        else:
            self.console.emit(f"#{channel}: {line}")
        return f"{len(self.console.transcript)}.000001"

    async def update(self, channel: str, ts: str, text: str, blocks: list[dict[str, Any]] | None = None) -> None:
        """Root status updates are Slack's edit-in-place; the terminal's replies already say it."""

    async def ephemeral(self, channel: str, user: str, text: str,
                        blocks: list[dict[str, Any]] | None = None) -> None:
        self.console.emit(f"opsbot (only @{user} sees this): {terminal(text)}")


def terminal(mrkdwn: str) -> str:
    """A Slack message's fallback text as a terminal line: no markup, no escapes, no `*bold*`."""
    text = plain(mrkdwn).replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    return re.sub(r"(?<![\w*])\*([^*\n]+)\*(?![\w*])", r"\1", text)


def render(result: Result) -> str:
    """The plain-text face of a result (the Slack fallback text, chat-shaped), mentions as @name."""
    # diff lines (`   │ `) are shown byte for byte; everything else loses Slack's markup
    return "\n".join(ln if ln.startswith(DIFF_PREFIX) else plain(ln) for ln in _render(result).split("\n"))


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
        lines.append("   " + "  ".join(f"{c.mark} {c.name}" for c in result.change.checks))
        for n in result.change.notes:
            lines.append(f"   note: {n}")
        diff = result.diff.splitlines()
        for ln in diff[:DIFF_LINES]:
            lines.append(f"{DIFF_PREFIX}{ln}")
        if len(diff) > DIFF_LINES:
            lines.append(f"{DIFF_PREFIX}… ({count(len(diff) - DIFF_LINES, 'more line')})")
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


def walkthrough(console: Console, pause: Callable[[str], None] = lambda s: None,
                after_merge: Callable[[str], None] = lambda request_id: None) -> None:
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
    after_merge(req)
    say("status frontend in production")
    console.emit("— done: `git log` in the repo shows opsbot's merge commit —")
