"""`history <app> [in <env>]`: opsbot's requests for the app and the commits that changed it."""

from __future__ import annotations

from commands._shared import no_extras, one_word
from opsbot.core.context import Context
from opsbot.core.model import History, Intent
from opsbot.core.parser import Args, name_word
from opsbot.core.registry import Command
from opsbot.core.results import Info, Result
from opsbot.errors import CommandError
from opsbot.manifests.gitrepo import git
from opsbot.manifests.index import UnknownApp

USAGE = "history <app> [in <env>]"


def parse(args: Args) -> Intent:
    no_extras(args, {"in"}, USAGE)
    app = name_word(one_word(args, "app", USAGE), "app")
    env = args.slot("in")
    return History(app, name_word(env, "environment") if env else None)


def run(intent: Intent, ctx: Context) -> Result:
    assert isinstance(intent, History)
    lines: list[str] = []
    if ctx.store is not None:
        for r in ctx.store.list_requests(app=intent.app, env=intent.env, limit=10):
            lines.append(f"{r.created_at:%Y-%m-%d %H:%M} {r.id} {r.title} · {r.state} · by {r.requester}")
    planner = ctx.planner()
    index = planner.index
    envs = [index.env(intent.env)] if intent.env else list(index.config.envs.values())
    found = False
    for env in envs:
        try:
            t = index.find(intent.app, env.name)
        except UnknownApp as exc:
            if intent.env and not lines:
                raise exc from None
            continue
        except CommandError as exc:  # the app is there but cannot be read: say so for that env
            found = True
            lines.append(f"{env.name}: {exc.message}")
            continue
        found = True
        files = [t.root] if t.layout == "helm" else index.graph(t.snap).closure(t.root)[1]
        log = git(ctx.repo.path, "log", "-n5", "--format=%h %ad %s", "--date=short", t.snap.sha, "--", *files)
        lines += [f"{env.name}: {line}" for line in log.splitlines()]
    if not found and not lines:
        raise index.unknown_app(intent.app)
    if not lines:
        lines.append(f"No history for {intent.app}.")
    return Info(intent, title=f"History of {intent.app}", lines=tuple(lines))


COMMAND = Command("history", USAGE, "past requests and commits for an app", parse, run, kind="read")
