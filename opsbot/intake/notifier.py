"""Moved to `opsbot.notify` (outbox and worker in `opsbot.notify.outbox`, event wording in
`opsbot.notify.messages`); this name stays for code written against it."""

from opsbot.notify.messages import queue_request_event
from opsbot.notify.outbox import (
    CHANNEL_POST,
    EPHEMERAL,
    ROOT_UPDATE,
    THREAD_REPLY,
    OutboxWorker,
    load_root,
    queue,
    queue_channel_post,
    queue_ephemeral,
    root_key,
    save_root,
)

__all__ = [
    "CHANNEL_POST", "EPHEMERAL", "ROOT_UPDATE", "THREAD_REPLY", "OutboxWorker", "load_root", "queue",
    "queue_channel_post", "queue_ephemeral", "queue_request_event", "root_key", "save_root",
]
