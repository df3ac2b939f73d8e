"""`status [<app>] [in <env>]`: what Git says each env runs, and the open requests."""

from __future__ import annotations

from commands._shared import no_extras
from opsbot.core.context import Context
from opsbot.core.model import Intent, RequestState, Status
from opsbot.core.parser import Args, UsageError, name_word
from opsbot.core.registry import Command
from opsbot.core.results import Info, Result
from opsbot.errors import CommandError
from opsbot.manifests.index import current_replicas, current_version

USAGE = "status [<app>] [in <env>]"


def parse(args: Args) -> Intent:
    no_extras(args, {"in"}, USAGE)
    if len(args.words) > 1:
        raise UsageError(f'Unexpected "{args.words[1]}".', USAGE)
    app = name_word(args.words[0], "app") if args.words else None
    env = args.slot("in")
    return Status(app, name_word(env, "environment") if env else None)


def run(intent: Intent, ctx: Context) -> Result:
    assert isinstance(intent, Status)
    planner = ctx.planner()
    index = planner.index
    envs = [index.env(intent.env)] if intent.env else list(index.config.envs.values())
    lines: list[str] = []
    data: dict[str, object] = {"envs": {}}
    if intent.app is None:
        for env in envs:
            where = f"branch {env.branch}" if env.branch else ", ".join(env.paths)
            apps = index.apps_in(env)
            lines.append(
                f"{env.name}: {len(apps)} app(s) in {where}"
                + (f" · approvals {env.approvals}" if env.approvals else "")
            )
            data["envs"][env.name] = {"apps": apps}  # type: ignore[index]
    else:
        keys = index.config.helm_keys(intent.app)
        found = False
        for env in envs:
            try:
                t = index.find(intent.app, env.name)
            except CommandError as exc:
                if intent.env:
                    raise
                if "Unknown app" in exc.message:
                    continue
                raise
            found = True
            version = current_version(t, keys.tag)
            hpas = t.hpas()
            if len(hpas) > 1:
                scale = (
                    f"⚠️ {len(hpas)} autoscalers target it ({', '.join(h['metadata']['name'] for h in hpas)})"
                )
            elif hpas:
                scale = (
                    f"autoscaled {hpas[0]['spec'].get('minReplicas', 1)}-{hpas[0]['spec'].get('maxReplicas')}"
                )
            else:
                scale = f"{current_replicas(t, keys.replicas)} replicas"
            lines.append(f"{env.name}: {version.describe()} · {scale}")
            data["envs"][env.name] = {"version": version.describe(), "scale": scale}  # type: ignore[index]
        if not found:
            raise CommandError(f'Unknown app "{intent.app}": no environment has it.')
    if ctx.store is not None:
        open_reqs = ctx.store.list_requests(
            states=[RequestState.PROPOSED, RequestState.APPROVED], app=intent.app, env=intent.env, limit=20
        )
        if open_reqs:
            lines.append("Open requests:")
            lines += [
                f"  {r.id} {r.title} · PR #{r.pr_number} · {r.state} · by {r.requester}" for r in open_reqs
            ]
    title = f"Status of {intent.app}" if intent.app else "Environments"
    return Info(intent, title=title, lines=tuple(lines), data=data)


COMMAND = Command("status", USAGE, "what each env runs, from Git, and open requests", parse, run, kind="read")
