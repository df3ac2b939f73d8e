"""`audit [<app>] [in <env>] [since <date>]`: the append-only audit log, newest last."""

from __future__ import annotations

from commands._policy import parse_since, policies
from commands._shared import no_extras
from opsbot.core.context import Context
from opsbot.core.model import Intent
from opsbot.core.parser import Args, UsageError, name_word
from opsbot.core.registry import Command
from opsbot.core.results import Info, Result
from opsbot.policy.intents import ShowAudit

USAGE = "audit [<app>] [in <env>] [since <date>]"
#: Rows shown in chat; `opsbot audit --json` / `--csv` export everything.
CHAT_ROWS = 30


def parse(args: Args) -> Intent:
    no_extras(args, {"in", "since"}, USAGE)
    if len(args.words) > 1:
        raise UsageError(f'Unexpected "{args.words[1]}".', USAGE)
    app = name_word(args.words[0], "app") if args.words else None
    env = args.slot("in")
    since = args.slot("since")
    if since is not None:
        parse_since(since)  # refuse a bad date before anything runs
    return ShowAudit(app, name_word(env, "environment") if env else None, since)


def run(intent: Intent, ctx: Context) -> Result:
    assert isinstance(intent, ShowAudit)
    since = parse_since(intent.since) if intent.since else None
    rows = policies(ctx).audit(intent.app, intent.env, since, limit=CHAT_ROWS)
    lines = tuple(
        f"{r.at:%Y-%m-%d %H:%M} {r.action:<10} by {r.actor}"
        + (f" · {r.request_id}" if r.request_id else "")
        + (f" PR #{r.pr_number}" if r.pr_number else "")
        + (f" · {r.app}" if r.app else "")
        + (f" in {r.env}" if r.env else "")
        + (f" · because {r.reason}" if r.reason else "")
        + (f" · {r.detail}" if r.detail else "")
        for r in rows
    )
    where = " ".join(x for x in (intent.app or "", f"in {intent.env}" if intent.env else "") if x)
    title = f"Audit log{' of ' + where if where else ''} (last {len(rows)})"
    return Info(intent, title=title, lines=lines or ("No audit rows match.",),
                data={"rows": [r.as_dict() for r in rows]})  # fmt: skip


COMMAND = Command("audit", USAGE, "who did what, when and why", parse, run, kind="read")
