"""Branch names, commit messages and PR bodies: the same on every forge, so reviewers see one shape.

The branch name is a function of the intent alone, which is what makes proposals idempotent: the
same ask finds the same branch, and its open PR, instead of opening a second one.
"""

from __future__ import annotations

import re

from opsbot.core.model import Change, Request

MAX_DIFF_IN_BODY = 60_000  # GitHub caps PR bodies at 65,536 characters


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9.-]+", "-", text.lower()).strip("-")[:40]


def branch_for(change: Change) -> str:
    intent = change.intent
    parts = [intent.verb, change.app or getattr(intent, "name", ""), change.env]
    return "opsbot/" + "-".join(slug(p) for p in parts if p) + "-" + intent.key()[:8]


def labels_for(change: Change) -> list[str]:
    out = ["opsbot"]
    if change.env:
        out.append(f"env:{change.env}")
    return out


def commit_message(change: Change, request: Request) -> str:
    lines = [change.title, ""]
    for f in change.fields:
        lines.append(f"{f.field}: {f.old if f.old is not None else '(unset)'} -> {f.new}")
    for n in change.notes:
        lines.append(n)
    lines += [
        "",
        f"Requested-by: {request.requester}",
        f"Opsbot-Request: {request.id}",
        f"Opsbot-Intent: {change.intent.key()}",
    ]
    return "\n".join(lines) + "\n"


def pr_body(
    change: Change, diff: str, request: Request, thread_link: str = "", requester_login: str = ""
) -> str:
    """Summary, diff, validation and who asked; never settings or secrets.

    With the requester's GitHub login known (settings `users`), they are @-mentioned, so GitHub
    shows reviewers whose change it is and notifies the requester of reviews.
    """
    rows = "\n".join(
        f"| {f.app} | {f.env} | {f.field} | `{f.old if f.old is not None else '(unset)'}` | `{f.new}` |"
        for f in change.fields
    )
    checks = "\n".join(
        f"- {c.mark} {c.name}{': ' + c.detail if c.detail else ''}" for c in change.checks
    )
    if len(diff) > MAX_DIFF_IN_BODY:
        diff = diff[:MAX_DIFF_IN_BODY] + "\n… (diff truncated; see the Files tab)\n"
    notes = "".join(f"> {n}\n" for n in change.notes)
    where = f" in [the chat thread]({thread_link})" if thread_link else ""
    who = f"@{requester_login} ({request.requester})" if requester_login else request.requester
    return (
        f"{change.title}\n\n"
        f"| app | env | field | from | to |\n|---|---|---|---|---|\n{rows}\n\n"
        f"{notes}"
        f"**Validation**\n{checks}\n\n"
        f"<details><summary>Diff</summary>\n\n```diff\n{diff}```\n</details>\n\n"
        f"Requested by {who}{where} · opsbot request {request.id} · command: `{request.command}`\n"
    )
