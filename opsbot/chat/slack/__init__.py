"""Slack's front door on slack-bolt (async, aiohttp): `/ops`, request threads, buttons, RBAC groups.

The only package that imports slack_bolt/slack_sdk, so the rest of opsbot stays testable and
replaceable. One concern per module: `ratelimit` (the shared Web API limiter), `poster` (Web API
calls and their errors), `groups` (user-group resolution for RBAC), `checks` (the v0 request
signature and Slack's shapes), `answers` (ephemeral answers), `transport` (the Bolt app, HTTP and
Socket Mode, running commands and clicks). It stays thin on purpose: acknowledge within Slack's 3 s, hand the words to
`Opsbot.handle` (the one dispatch path every transport uses, so RBAC and four-eyes are checked the
same way for a typed command and a click), and render the Result with `opsbot.chat.blocks`.

Why the pieces are shaped this way:

* **Ack first, work later.** Bolt runs with `process_before_response=True` and every listener only
  acks and spawns a task, so the HTTP response (or the Socket Mode ack) never waits for git,
  kustomize or the Web API; the tasks are tracked so shutdown can finish them.
* **One thread root per request.** Proposing commands post the root with `chat.postMessage`, under a
  per-request lock that first checks whether a root exists: a second identical `/ops` (or a Slack
  retry, or a race with the first) gets an ephemeral link to the existing thread instead. Slack
  redeliveries carry the same `trigger_id` and are acknowledged and dropped.
* **Transitions go through the outbox.** `bot.on_transition` queues a thread reply and a root update
  (`opsbot.notify.outbox`), which `OutboxWorker` posts through `SlackPoster`; nothing is posted
  from the dispatcher thread, so a Slack outage delays messages and loses none.
* **One limiter for the Web API.** `RateLimiter` paces every call per method tier and
  chat.postMessage per channel, and a 429's `Retry-After` blocks that method for everyone.
  `SlackPoster` maps Slack's answers to `TemporaryError` (ratelimited, 5xx, timeouts: retry) and
  `PermanentError` (invalid_auth, channel_not_found, not_in_channel, ...: log and tell someone).
* **User groups are resolved before the command runs.** RBAC asks `group_members(id)` from the
  dispatcher's worker thread; that callable only reads a cache which `UserGroups.refresh` fills
  asynchronously (usergroups.users.list, through the limiter) before each command. A failed refresh
  keeps the last known members; a group never resolved has no members (deny by default). The cache
  is built before the bot and passed to it (`Opsbot(group_members=...)`) and to the transport.
* **Ephemeral answers use the response_url** of the command or click (it works in channels the bot
  is not in, and it is what Slack gives for exactly this); chat.postEphemeral is the fallback.

What the limiter does not see: Bolt's one auth.test per process, Socket Mode's
apps.connections.open (Tier 1, only on (re)connect) and response_url posts (not Web API calls).

Known windows (documented, not hidden): a crash after Slack accepted a thread root and before the
request row recorded its ts means the same command typed again posts a second root for the same
PR; the outbox has the equivalent window for replies (see opsbot.notify.outbox). Retried
deliveries are recognised by trigger_id in memory, per process: after a restart, or on another
replica, a redelivery is caught by the core instead (same PR, "already open" answer).

Secrets: the bot token lives in the Web API client only, the signing secret in Bolt's verifier,
the app token in the Socket Mode client; none is ever logged or put in a message.
"""

from opsbot.chat.slack.groups import UserGroups, rbac_groups, user_groups
from opsbot.chat.slack.poster import SlackPoster
from opsbot.chat.slack.ratelimit import RateLimiter
from opsbot.chat.slack.transport import BUTTON_VERBS, COMMAND, EVENTS_PATH, SlackTransport, permalink

__all__ = [
    "BUTTON_VERBS",
    "COMMAND",
    "EVENTS_PATH",
    "RateLimiter",
    "SlackPoster",
    "SlackTransport",
    "UserGroups",
    "permalink",
    "rbac_groups",
    "user_groups",
]
