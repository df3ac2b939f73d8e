"""What a command hands back. Transports (Slack, CLI, console) render these; commands never post.

Each result is data with a plain-text rendering (`text()`), used by the CLI and the console and as
Slack's fallback `text`; `opsbot.chat.blocks` renders the same data to Block Kit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from opsbot.core.model import Change, Intent, PullRequest, Request


@dataclass(frozen=True)
class Result:
    intent: Intent | None

    #: `ephemeral` results are shown to the requester only; `thread` results start or join a thread.
    visibility: str = "ephemeral"

    def text(self) -> str:
        raise NotImplementedError

    def as_json(self) -> dict[str, Any]:
        return {"intent": self.intent.as_dict() if self.intent else None, "text": self.text()}


@dataclass(frozen=True)
class Proposed(Result):
    """A change was planned (and, for `run`, proposed as a PR)."""

    change: Change | None = None
    diff: str = ""
    pr: PullRequest | None = None
    request: Request | None = None
    existing: bool = False  # True when the same intent already had an open PR
    visibility: str = "thread"

    def text(self) -> str:
        assert self.change is not None
        lines = [self.change.title]
        for f in self.change.fields:
            lines.append(
                f"  {f.app} · {f.env} · {f.field} {f.old if f.old is not None else '(unset)'} → {f.new}"
            )
        for c in self.change.checks:
            lines.append(f"  {c.mark} {c.name}{': ' + c.detail if c.detail else ''}")
        for n in self.change.notes:
            lines.append(f"  note: {n}")
        if self.pr:
            word = "Already open" if self.existing else "Opened"
            lines.append(
                f"{word}: PR #{self.pr.number} ({self.pr.branch} → {self.pr.base_branch}) {self.pr.url}"
            )
        if self.request:
            lines.append(f"Request {self.request.id}: {self.request.state}")
        lines.append(self.diff.rstrip("\n"))
        return "\n".join(lines)

    def as_json(self) -> dict[str, Any]:
        assert self.change is not None
        out: dict[str, Any] = {
            "intent": self.change.intent.as_dict(),
            "files": self.change.files,
            "diff": self.diff,
            "summary": self.change.title,
            "fields": [f.__dict__ for f in self.change.fields],
            "checks": [c.__dict__ for c in self.change.checks],
            "notes": list(self.change.notes),
            "base": {"branch": self.change.base_branch, "sha": self.change.base_sha},
        }
        if self.pr:
            out["branch"] = self.pr.branch
            out["pr"] = {"number": self.pr.number, "url": self.pr.url, "existing": self.existing}
        if self.request:
            out["request"] = self.request.id
        return out


@dataclass(frozen=True)
class NoChange(Result):
    """Nothing to do: e.g. already at that version. An answer, not an empty PR."""

    message: str = ""

    def text(self) -> str:
        return self.message


@dataclass(frozen=True)
class Info(Result):
    """Read-only answers: status, history, help, prs."""

    title: str = ""
    lines: tuple[str, ...] = ()
    data: dict[str, Any] = field(default_factory=dict)

    def text(self) -> str:
        return "\n".join([self.title, *self.lines]) if self.title else "\n".join(self.lines)

    def as_json(self) -> dict[str, Any]:
        return {
            "intent": self.intent.as_dict() if self.intent else None,
            "title": self.title,
            "lines": list(self.lines),
            **self.data,
        }


@dataclass(frozen=True)
class RequestUpdate(Result):
    """A request moved (approved, merged, closed): the thread gets a reply, the root its status."""

    request: Request | None = None
    event: str = ""  # approved | merged | closed | merge-blocked | approval-recorded
    message: str = ""
    visibility: str = "thread"
    #: the transitions this command fired (empty when nothing moved): chat keeps a repeat quiet
    events: tuple[str, ...] = ()

    def text(self) -> str:
        return self.message

    def as_json(self) -> dict[str, Any]:
        out = super().as_json()
        if self.request:
            out.update({"request": self.request.id, "state": str(self.request.state), "event": self.event})
        return out


@dataclass(frozen=True)
class Failure(Result):
    """The command did not happen. `reference` is set for unexpected errors (details in the log)."""

    message: str = ""
    reference: str = ""
    denied: bool = False

    def text(self) -> str:
        if self.reference:
            return f"Something went wrong on opsbot's side (reference {self.reference}). Nothing was changed."
        return self.message

    def as_json(self) -> dict[str, Any]:
        return {"error": self.text(), "denied": self.denied, "reference": self.reference or None}
