"""`status [<app>] [in <env>]`: what Git says each env runs, the live side, and the open requests.

The live side: when an env's `.opsbot.yaml` agent names a cluster opsbot can reach (`ctx.live`,
the clusters of OPSBOT_WATCH), the workload's ready/desired replicas and running images are read
from that cluster and set next to what Git says, with any drift said plainly. Reading goes through
the `LiveReader` port, so this module never imports a cluster client; a cluster that cannot be
read makes the answer say "cluster unreachable", never makes it wait or fail.
"""

from __future__ import annotations

from typing import Any

from commands._shared import no_extras
from opsbot.core import wording
from opsbot.core.context import Context
from opsbot.core.model import Intent, RequestState, Status
from opsbot.core.parser import Args, UsageError, name_word
from opsbot.core.ports import LiveWorkload
from opsbot.core.registry import Command
from opsbot.core.results import Info, Result
from opsbot.errors import OpsbotError
from opsbot.manifests.config import EnvConfig
from opsbot.manifests.images import parse_image
from opsbot.manifests.index import Target, UnknownApp, Version, current_replicas, current_version

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
            except UnknownApp:
                if intent.env:
                    raise
                continue
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
                count = current_replicas(t, keys.replicas)
                scale = wording.replicas(count) if count is not None else "replicas not set"
            lines.append(f"{env.name}: {version.describe()} · {scale}")
            data["envs"][env.name] = {"version": version.describe(), "scale": scale}  # type: ignore[index]
            replicas = None if hpas else current_replicas(t, keys.replicas)
            live_lines, live_data = live_side(ctx, env, t, version, replicas)
            lines += live_lines
            if live_data is not None:
                data["envs"][env.name]["live"] = live_data  # type: ignore[index]
        if not found:
            raise index.unknown_app(intent.app)
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


#: Workload kinds whose live side is read (what `LiveReader` implementations serve).
LIVE_KINDS = ("Deployment", "StatefulSet")


def live_side(
    ctx: Context, env: EnvConfig, t: Target, version: Version, replicas: int | None
) -> tuple[list[str], dict[str, Any] | None]:
    """Lines under the env's Git line, and their data; nothing when no cluster is configured.

    `replicas` is what Git says, or None when an autoscaler owns the count (then the cluster's own
    figure is no drift).
    """
    cluster = env.agent.cluster if env.agent is not None else ""
    if ctx.live is None or not cluster or not ctx.live.covers(cluster):
        return [], None
    where = f"  live on {cluster}"
    if t.kind not in LIVE_KINDS or t.layout == "helm":
        what = "Helm values" if t.layout == "helm" else f"a {t.kind}"
        return [f"{where}: not read (opsbot reads Deployments and StatefulSets, this is {what})"], {
            "cluster": cluster,
            "read": False,
        }
    meta = t.rendered.get("metadata") or {}
    namespace = str(meta.get("namespace") or "default")
    name = str(meta.get("name") or t.name)
    try:
        live = ctx.live.read(cluster, namespace, t.kind, name)
    except OpsbotError as exc:
        return [f"{where}: cluster unreachable ({exc})"], {"cluster": cluster, "error": str(exc)}
    if live is None:
        missing = f"Git has {t.kind} {name}, the cluster does not"
        return [f"{where}: no {t.kind} {namespace}/{name}", f"  ⚠️ drift: {missing}"], {
            "cluster": cluster,
            "namespace": namespace,
            "found": False,
            "drift": [missing],
        }
    drift = drift_between(version, replicas, live)
    # Not all updated, or the controller has not seen the latest spec yet: a rollout is under way.
    # Fewer ready than desired alone is not called one; the ready count already says it.
    rolling = live.updated_replicas < live.replicas or (
        not live.rolled_out and live.ready_replicas >= live.replicas
    )
    state = " · rolling out" if rolling else ""
    out = [f"{where}: {live.ready_replicas}/{live.replicas} ready · {', '.join(live.images)}{state}"]
    out += [f"  ⚠️ drift: {d}" for d in drift] or ["  ✅ in sync with Git"]
    return out, {
        "cluster": cluster,
        "namespace": namespace,
        "found": True,
        "replicas": live.replicas,
        "ready": live.ready_replicas,
        "images": list(live.images),
        "rolled_out": live.rolled_out,
        "drift": drift,
    }


def drift_between(version: Version, replicas: int | None, live: LiveWorkload) -> list[str]:
    """What Git says and the cluster does not run, container by container, in plain words."""
    running = dict(live.containers)
    drift: list[str] = []
    for container, image in version.images:
        actual = running.get(container)
        if actual is None:
            drift.append(f"Git has container {container} ({image}), the cluster does not")
        elif actual != image:
            drift.append(f"Git says {image}, cluster runs {_as_delta(image, actual)}")
    if replicas is not None and replicas != live.replicas:
        drift.append(f"Git says {wording.replicas(replicas)}, cluster has {live.replicas}")
    return drift


def _as_delta(wanted: str, actual: str) -> str:
    """Only the tag when the repository is the same (`1.4.2`), else the whole image."""
    a, b = parse_image(wanted), parse_image(actual)
    if a.name == b.name and b.tag and not b.digest:
        return b.tag
    return actual


COMMAND = Command(
    "status",
    USAGE,
    "what each env runs (Git, and live where a cluster is set), open requests",
    parse,
    run,
    kind="read",
)
