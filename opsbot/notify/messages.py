"""Request events -> chat messages: the one place that words what happened to a request.

The lifecycle (opsbot.core.requests) publishes one event per transition with its facts; this
module turns an event into the thread reply and the root update, and queues them through the
outbox (opsbot.notify.outbox) under a key derived from the event and its facts, so the same event
reported twice (a webhook redelivery, a second replica) is queued once. Slack, the console and the
deploy channel all read the same wording from `opsbot.chat.blocks`/`texts`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from opsbot.chat import blocks, texts
from opsbot.core.model import Request
from opsbot.core.ports import Store
from opsbot.notify.outbox import ROOT_UPDATE, THREAD_REPLY, queue


def _digest(event: str, facts: Mapping[str, Any]) -> str:
    raw = json.dumps({"event": event, "facts": facts}, sort_keys=True, default=str)
    return hashlib.sha256(raw.encode()).hexdigest()[:12]


def _reply_facts(store: Store, request: Request, event: str, facts: Mapping[str, Any]) -> dict[str, Any]:
    """The core's transition facts in the words `blocks.thread_reply` takes for each kind."""
    if event == "approved":
        return {"by": str(facts.get("by", "")), "count": int(facts.get("count", 1) or 1),
                "needed": int(facts.get("needed", 1) or 1)}
    if event == "merged":
        return {"by": str(facts.get("by", "")), "sha": str(facts.get("sha", ""))}
    if event == "pushed":
        return {"by": str(facts.get("by", "")), "sha": str(facts.get("sha", "")),
                "needed": int(facts.get("needed", 1) or 0)}
    if event == "closed":
        return {"by": str(facts.get("by", "")), "reason": str(facts.get("reason", ""))}
    if event in ("rebased", "updated"):
        return {k: facts.get(k) for k in ("base", "after", "sha", "same", "old", "new")}
    if event == "superseded":
        by = str(facts.get("by", ""))
        newer = store.get_request(by) if by else None
        number = facts.get("pr")
        return {"pr_number": int(number) if isinstance(number, int) else None,
                "pr_url": newer.pr_url if newer else "", "request_id": by}
    return dict(facts)


def queue_request_event(
    store: Store,
    request: Request,
    event: str,
    facts: Mapping[str, Any],
    *,
    status: str = "",
    reason: str = "",
) -> list[str]:
    """Queue the thread reply and the root update for one transition; return the keys newly queued.

    The key is `<request>:<event>:<digest of the facts>`, so the same transition reported twice (a
    webhook redelivery, a retried click) is queued once. Events without a reply wording (e.g. a
    core event that has none) still update the root.
    """
    if facts.get("posted"):
        return []  # its poster (the deploy correlator) queued its own reply, root update and line
    base = f"{request.id}:{event}:{_digest(event, facts)}"
    added: list[str] = []
    if event in blocks.REPLY_KINDS:
        rendered = blocks.thread_reply(event, **_reply_facts(store, request, event, facts))
        payload = {"request": request.id, "text": rendered["text"], "blocks": rendered["blocks"]}
        if queue(store, f"{base}:reply", THREAD_REPLY, payload):
            added.append(f"{base}:reply")
    root: dict[str, Any] = {"request": request.id}
    if not status and event == "pushed":
        status = texts.pushed_status(str(facts.get("by", "")), str(facts.get("sha", "")))
    if status:
        root["status"] = status
    if reason:
        root["reason"] = reason
    if queue(store, f"{base}:root", ROOT_UPDATE, root):
        added.append(f"{base}:root")
    return added


