"""Deploy outcomes -> chat posts: the thread reply, the root update and the deploy-channel line.

Why here and not in intake: intake decides *what happened* (which request a reconcile settled,
whether a cluster is Ready, whether a merge went quiet); how that is worded and queued is the same
job `messages.py` does for the lifecycle's own events, and one package owns all of it. Every post
goes through the outbox under a key derived from the request and the outcome, so a redelivered event
or a second replica queues it once. The functions return the keys they newly queued.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from opsbot.chat import blocks, texts
from opsbot.core.model import Request, RequestState
from opsbot.core.ports import Store
from opsbot.notify.outbox import ROOT_UPDATE, THREAD_REPLY, queue, queue_channel_post


def post_keys(request_id: str, state: RequestState | str) -> tuple[str, str, str]:
    """Outbox keys of the posts of one deploy outcome: reply, root update, channel line."""
    base = f"deploy:{request_id}:{state}"
    return f"{base}:reply", f"{base}:root", f"{base}:channel"


def warning_key(request_id: str) -> str:
    return f"deploy:{request_id}:warning:reply"


def one_line(text: str) -> str:
    return " ".join(text.split())


def failure_reason(reason: str, message: str) -> str:
    return one_line(f"{reason}: {message}" if message else reason)


def _reply(store: Store, key: str, request: Request, rendered: blocks.Rendered) -> bool:
    return queue(store, key, THREAD_REPLY, {"request": request.id, "text": rendered["text"], "blocks": rendered["blocks"]})


def _approvers(store: Store, request: Request) -> list[str]:
    return [a.approver for a in store.approvals(request.id)]


def queue_outcome(
    store: Store,
    channel: str | None,
    request: Request,
    target: RequestState,
    *,
    agent: str,
    agent_kind: str,
    agent_name: str,
    sha: str,
    reason: str,
    message: str,
    since_merge: float | None,
) -> list[str]:
    """A request deployed or failed in its env: reply, root status, one deploy-channel line."""
    reply_key, root_key, channel_key = post_keys(request.id, target)
    if target is RequestState.DEPLOYED:
        reply = blocks.thread_reply(
            "deployed", env=request.env, agent=agent, agent_kind=agent_kind, agent_name=agent_name,
            sha=sha, since_merge=since_merge,
        )  # fmt: skip
        why = ""
    else:
        reply = blocks.thread_reply("failed", env=request.env, reason=reason, message=message)
        why = failure_reason(reason, message)
    queued: list[str] = []
    if _reply(store, reply_key, request, reply):
        queued.append(reply_key)
    root: dict[str, Any] = {"request": request.id}
    if why:
        root["reason"] = why[:300]
    if queue(store, root_key, ROOT_UPDATE, root):
        queued.append(root_key)
    if channel:
        line = blocks.deploy_channel_line(
            request, outcome=target, approvers=_approvers(store, request), since_merge=since_merge, reason=why
        )
        if queue_channel_post(store, channel_key, channel, line):
            queued.append(channel_key)
    return queued


def queue_cluster_applied(
    store: Store,
    channel: str | None,
    request: Request,
    target: RequestState,
    *,
    ready_already: bool,
    agent: str,
    agent_kind: str,
    agent_name: str,
    sha: str,
    cluster: str,
    reason: str,
    message: str,
    since_merge: float | None,
) -> list[str]:
    """Step one of `create cluster`: the management cluster's agent applied (or failed to)."""
    reply_key, root_key, channel_key = post_keys(request.id, target)
    root: dict[str, Any] = {"request": request.id}
    queued: list[str] = []
    if target is RequestState.DEPLOYED:
        reply = blocks.thread_reply(
            "cluster_applied", name=request.app, agent=agent, agent_kind=agent_kind,
            agent_name=agent_name, sha=sha, on=cluster, since_merge=since_merge,
        )  # fmt: skip
        root["status"] = texts.cluster_ready_status(request.app) if ready_already else texts.CLUSTER_APPLIED_STATUS
    else:
        where = cluster or texts.MANAGEMENT_CLUSTER
        reply = blocks.thread_reply("failed", env=where, reason=reason, message=message)
        why = failure_reason(reason, message)
        root["reason"] = why[:300]
        if channel:
            line = blocks.deploy_channel_line(
                request, outcome=target, approvers=_approvers(store, request), since_merge=since_merge,
                reason=why, env=where,
            )  # fmt: skip
            if queue_channel_post(store, channel_key, channel, line):
                queued.append(channel_key)
    if _reply(store, reply_key, request, reply):
        queued.insert(0, reply_key)
    if queue(store, root_key, ROOT_UPDATE, root):
        queued.append(root_key)
    return queued


def queue_cluster_ready(
    store: Store, channel: str | None, request: Request, *, since_merge: float | None
) -> list[str]:
    """Step two of `create cluster`: the new cluster reports Ready."""
    base = f"cluster:{request.id}:ready"
    queued: list[str] = []
    reply = blocks.thread_reply("cluster_ready", name=request.app, since_merge=since_merge)
    if _reply(store, f"{base}:reply", request, reply):
        queued.append(f"{base}:reply")
    if queue(store, f"{base}:root", ROOT_UPDATE, {"request": request.id, "status": texts.cluster_ready_status(request.app)}):
        queued.append(f"{base}:root")
    if channel:
        line = blocks.cluster_ready_channel_line(request, approvers=_approvers(store, request), since_merge=since_merge)
        if queue_channel_post(store, f"{base}:channel", channel, line):
            queued.append(f"{base}:channel")
    return queued


def queue_quiet_warning(
    store: Store, request: Request, *, minutes: int, agent: str, agent_kind: str, agent_name: str
) -> str | None:
    """No deploy event within the timeout after the merge: one warning in the thread."""
    rendered = blocks.thread_reply(
        "warning",
        env=request.env or texts.cluster_label(request.app),
        minutes=minutes,
        agent=agent,
        agent_kind=agent_kind,
        agent_name=agent_name,
    )
    key = warning_key(request.id)
    return key if _reply(store, key, request, rendered) else None


__all__: Sequence[str] = (
    "failure_reason",
    "one_line",
    "post_keys",
    "queue_cluster_applied",
    "queue_cluster_ready",
    "queue_outcome",
    "queue_quiet_warning",
    "warning_key",
)
