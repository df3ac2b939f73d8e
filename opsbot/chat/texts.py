"""Every word opsbot says in Slack, in one place, so wording is reviewed and changed in one file.

Contract: constants are plain words (safe as plain_text); functions return Slack mrkdwn and escape
every value they interpolate, because values (app names, titles, agent messages, user text) come from
people and repositories. `opsbot.chat.blocks` only arranges these strings into Block Kit.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

# --------------------------------------------------------------------------------------------- basics


def escape(text: object) -> str:
    """Escape the three characters Slack's mrkdwn treats as control (`<@U1>`, `<!here>`, links).

    Without this an app called `<!channel>` would ping everyone, and `a<b` would vanish.
    """
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


_SLACK_USER = re.compile(r"^[UW][A-Z0-9]{2,}$")
_MENTION = re.compile(r"<@([UW][A-Z0-9]{2,})>")


def escape_keeping_mentions(text: object) -> str:
    """`escape`, except that well-formed user mentions (`<@U0BOB>`) stay mentions.

    Why: the request lifecycle words its answers with mentions ("Merged by <@U0BOB> as …");
    escaping them showed `&lt;@U0BOB&gt;` in the ephemeral reply. Only a user id in exactly that
    form survives; `<!channel>`, links and everything else are still escaped.
    """
    parts = _MENTION.split(str(text))
    # split() with one group alternates: text, user id, text, user id, ..., text
    return "".join(escape(p) if i % 2 == 0 else f"<@{p}>" for i, p in enumerate(parts))


def plain(text: object) -> str:
    """Slack markup as a terminal shows it: `<@bob>` → `@bob`, `<!here>` → `@here`, `<url|label>` →
    `label (url)`.

    For the CLI and the console, which print what chat would say without Slack to render it. Only
    these bracket forms are touched (never `*` or `_`), so a diff or a YAML value passes unchanged.
    """
    out = re.sub(r"<@([^<>|\s]+)(?:\|([^<>]*))?>", lambda m: "@" + (m.group(2) or m.group(1)), str(text))
    out = re.sub(r"<!([a-z]+)(?:\|[^<>]*)?>", r"@\1", out)
    out = re.sub(r"<#[A-Z0-9]+\|([^<>]+)>", r"#\1", out)
    out = re.sub(r"<([a-z][a-z0-9+.-]*:[^<>|\s]+)\|([^<>]+)>", r"\2 (\1)", out)
    return re.sub(r"<([a-z][a-z0-9+.-]*:[^<>|\s]+)>", r"\1", out)
_GITHUB_USER = re.compile(r"^github:(.+)$")


def who(actor: str) -> str:
    """A person as Slack should show them: a mention for a Slack user id, else their escaped name.

    Actors are stored as Slack ids (chat), `github:login` (reviews on GitHub) or plain names (CLI).
    """
    actor = actor.strip()
    if _SLACK_USER.match(actor):
        return f"<@{actor}>"
    github = _GITHUB_USER.match(actor)
    if github:
        return f"@{escape(github.group(1))} (GitHub)"
    return escape(actor or "someone")


def people(actors: Sequence[str]) -> str:
    return ", ".join(who(a) for a in actors)


def duration(value: float | timedelta) -> str:
    """`1m 42s`, `42s`, `2h 5m`, `3d 4h`: two units at most, because that is what people read."""
    seconds = int(value.total_seconds() if isinstance(value, timedelta) else value)
    seconds = max(seconds, 0)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    if minutes:
        return f"{minutes}m {secs}s" if secs else f"{minutes}m"
    return f"{secs}s"


def short_sha(sha: str) -> str:
    return sha[:7]


def plural(count: int, word: str, many: str | None = None) -> str:
    return f"{count} {word if count == 1 else (many or word + 's')}"


def clip(text: str, limit: int) -> str:
    """Cut plain text to `limit` characters with an ellipsis (before escaping, so no entity is cut)."""
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + "…"


# --------------------------------------------------------------------------------------------- request root

#: One emoji per verb, so a channel full of requests can be scanned at a glance.
VERB_EMOJI: dict[str, str] = {
    "scale": "📦",
    "promote": "⏫",
    "deploy": "🚢",
    "rollback": "⏪",
    "create-cluster": "🏗️",
}
DEFAULT_EMOJI = "🔧"

BUTTON_REVIEW = "Review PR"
BUTTON_APPROVE = "Approve"
BUTTON_MERGE = "Merge"
BUTTON_CANCEL = "Cancel"

CONFIRM_MERGE_TITLE = "Merge this pull request?"
CONFIRM_MERGE_YES = "Merge"
CONFIRM_MERGE_NO = "Not yet"
CONFIRM_CANCEL_TITLE = "Cancel this request?"
CONFIRM_CANCEL_YES = "Cancel request"
CONFIRM_CANCEL_NO = "Keep it"

UNSET = "(unset)"


def verb_emoji(verb: str) -> str:
    return VERB_EMOJI.get(verb, DEFAULT_EMOJI)


def title_line(verb: str, title: str) -> str:
    return f"{verb_emoji(verb)} *{escape(clip(title, 200))}*"


def fallback_title(verb: str, app: str, env: str) -> str:
    """A title when the request has none (older rows): `scale cache in production`."""
    where = f" in {env}" if env else ""
    return f"{verb} {app}{where}".strip()


def fact(label: str, value: str) -> str:
    return f"{label} *{escape(clip(value, 100))}*"


def field_label(name: str) -> str:
    """`replicas` → `Replicas`, `image.tag` stays readable; labels are shown in the root's fact line."""
    return name[:1].upper() + name[1:]


def field_change(name: str, old: str | None, new: str, *, app: str = "") -> str:
    """`Replicas *1 → 3*`, or `web Image *1.2 → 1.3*` when a change touches another app."""
    label = field_label(clip(name, 60))
    prefix = f"{escape(clip(app, 60))} " if app else ""
    before = escape(clip(old if old is not None else UNSET, 80))
    return f"{prefix}{escape(label)} *{before} → {escape(clip(new, 80))}*"


def more_fields(count: int) -> str:
    return f"+{plural(count, 'more change')}"


def pr_link(number: int | None, url: str) -> str:
    if number is None:
        return ""
    label = f"PR #{number}"
    if url and not any(c in url for c in "<>|"):
        return f"<{url}|{label}>"
    return label


def requested_by(requester: str) -> str:
    return f"requested by {who(requester)}"


def approvals_needed(needed: int) -> str:
    if needed <= 0:
        return "no approval needed"
    return f"needs {plural(needed, 'approval')}"


def check_item(name: str, ok: bool, detail: str = "", *, skipped: bool = False) -> str:
    """`✅ schema (k8s 1.37)` for a pass; `❌ kustomize build: <why>` for a failure; `⚠️ … skipped: <why>`."""
    mark = "❌" if not ok else "⚠️" if skipped else "✅"
    # names say which schema was used ("schema (HelmRelease, CRD from repo clusters/…/gotk-components.yaml)")
    if skipped and ok:
        return f"{mark} {escape(clip(name, 120))}: {escape(clip(detail, 300))}"
    if not detail:
        return f"{mark} {escape(clip(name, 120))}"
    if ok:
        return f"{mark} {escape(clip(name, 120))} ({escape(clip(detail, 80))})"
    return f"{mark} {escape(clip(name, 120))}: {escape(clip(detail, 300))}"


def note(text: str) -> str:
    return f"ℹ️ {escape(clip(text, 500))}"


def diff_cut(lines: int) -> str:
    """Said under a truncated diff, so nobody approves a change believing they saw all of it."""
    return f"… {plural(lines, 'more line')} not shown: review the full diff in the PR"


def status(text: str) -> str:
    return f"*Status:* {escape(clip(text, 500))}"


def status_line(
    state: str,
    *,
    approvals: int = 0,
    needed: int = 0,
    merge_sha: str = "",
    env: str = "",
    reason: str = "",
) -> str:
    """The phrase after `Status:` on the thread root, per request state (plain text)."""
    where = f" in {env}" if env else ""
    if state == "proposed":
        if needed <= 0:
            return "ready to merge"
        return f"waiting for approval ({approvals} of {needed})" if needed > 1 else "waiting for approval"
    if state == "approved":
        return "approved, ready to merge"
    if state == "merged":
        sha = f" as {short_sha(merge_sha)}" if merge_sha else ""
        return f"merged{sha}, waiting for the agent to apply it{where}"
    if state == "deployed":
        return f"live{where}"
    if state == "failed":
        return f"failed{where}" + (f": {reason}" if reason else "")
    if state == "closed":
        return "closed without merging" + (f": {reason}" if reason else "")
    if state == "superseded":
        return "superseded by a newer request" + (f": {reason}" if reason else "")
    return state


def confirm_merge_text(pr_number: int | None, env: str) -> str:
    pr = f"PR #{pr_number}" if pr_number is not None else "the pull request"
    target = f" to {escape(env)}" if env else ""
    return f"This merges {pr}; the GitOps agent then applies it{target}."


def confirm_cancel_text(pr_number: int | None) -> str:
    pr = f"PR #{pr_number}" if pr_number is not None else "the pull request"
    return f"This closes {pr} without merging. Nothing is deployed."


def root_fallback(verb: str, title: str, pr_number: int | None, status_text: str) -> str:
    pr = f" · PR #{pr_number}" if pr_number is not None else ""
    return f"{verb_emoji(verb)} {escape(clip(title, 200))}{pr} · Status: {escape(clip(status_text, 200))}"


# --------------------------------------------------------------------------------------------- thread replies


def approved(by: str, count: int = 1, needed: int = 1) -> str:
    """`✅ Approved by @bob`; with several approvals needed, how far along it is."""
    if needed > 1 and count < needed:
        return f"✅ Approved by {who(by)} ({count} of {needed} approvals)"
    return f"✅ Approved by {who(by)}"


def merged(by: str, sha: str) -> str:
    return f"🔀 Merged by {who(by)} as {escape(short_sha(sha))}"


def pushed(by: str, sha: str, needed: int = 1) -> str:
    """Someone else's commit landed on the PR branch: what was reviewed is not what would merge."""
    again = "approval is needed again before it can merge" if needed > 0 else "merge it again once you have read it"
    return f"⚠️ {who(by)} pushed {escape(short_sha(sha))} to the PR branch; approvals are cleared and {again}."


def _effect_words(effect: Any) -> str:
    items = [list(e) for e in effect or [] if isinstance(e, list | tuple) and len(e) == 5]
    if not items:
        return "no field changes"
    words = [change_words(str(app), str(name), str(old) if old != "" else None, str(new))
             for app, _env, name, old, new in items[:5]]
    if len(items) > 5:
        words.append(f"and {len(items) - 5} more")
    return ", ".join(words)


def rebased(base: str, after: str, sha: str = "", same: bool = True, old: Any = (), new: Any = ()) -> str:
    """opsbot moved the PR onto the new base; whether the approvals stand is the point of the message."""
    head = f"🔁 Rebased on {escape(base)} after {escape(clip(after, 100))}"
    if same:
        return f"{head}; the change is the same ({_effect_words(new)}), so approvals stand."
    return (f"{head}; the change is now {_effect_words(new)} (was {_effect_words(old)}), "
            "so approval is needed again.")


def updated(base: str = "", after: str = "", sha: str = "", same: bool = True, old: Any = (), new: Any = ()) -> str:
    """The same intent asked again planned differently (another config, a moved base): the PR follows."""
    head = "✏️ Updated the PR to what was just asked again"
    if same:
        return f"{head}; the change is the same ({_effect_words(new)}), so approvals stand."
    return (f"{head}; the change is now {_effect_words(new)} (was {_effect_words(old)}), "
            "so approval is needed again.")


def pushed_status(by: str, sha: str) -> str:
    """The root's status line after a push by someone else (plain text)."""
    return f"needs approval again: {by or 'someone'} pushed {short_sha(sha)}"


#: How agents are named in sentences.
AGENT_NAMES: dict[str, str] = {"flux": "Flux", "argocd": "Argo CD", "watch": "Kubernetes"}


def agent_words(source: str, kind: str = "", name: str = "") -> str:
    """`Flux kustomization apps`, `Argo CD application web`."""
    parts = [AGENT_NAMES.get(source, source), kind.lower(), name]
    return escape(" ".join(p for p in parts if p))


def deployed(env: str, agent: str, agent_kind: str, agent_name: str, sha: str,
             since_merge: float | timedelta | None = None) -> str:
    """`🚀 Live in production — Flux kustomization apps applied 1a2b3c4, 1m 42s after merge`."""
    after = f", {duration(since_merge)} after merge" if since_merge is not None else ""
    who_applied = agent_words(agent, agent_kind, agent_name)
    return f"🚀 Live in {escape(env)} — {who_applied} applied {escape(short_sha(sha))}{after}"


def failed(env: str, reason: str, message: str) -> str:
    """`❌ Failed in production — HealthCheckFailed: deployment cache not ready (timeout 5m)`."""
    detail = ": ".join(escape(clip(p, 1500)) for p in (reason, message) if p)
    return f"❌ Failed in {escape(env)} — {detail or 'the agent reported a failure'}"


def superseded(pr_number: int | None = None, pr_url: str = "", request_id: str = "") -> str:
    if pr_number is not None:
        return f"♻️ Superseded by {pr_link(pr_number, pr_url)}; this PR was closed"
    if request_id:
        return f"♻️ Superseded by request {escape(request_id)}; this PR was closed"
    return "♻️ Superseded by a newer request; this PR was closed"


def closed(by: str = "", reason: str = "") -> str:
    actor = f" by {who(by)}" if by else ""
    why = f" — {escape(clip(reason, 500))}" if reason else ""
    return f"🚫 Closed{actor} without merging{why}"


def no_event_warning(env: str, minutes: int, agent: str = "", agent_kind: str = "",
                     agent_name: str = "") -> str:
    """Said when the agent stays silent: the change is merged but nobody knows whether it is live."""
    watcher = agent_words(agent, agent_kind, agent_name) if agent else "the GitOps agent"
    return (f"⚠️ No deploy event for {escape(env)} within {minutes} min of the merge. "
            f"Check that {watcher} is reconciling this branch.")


def cluster_ready(name: str, since_merge: float | timedelta | None = None) -> str:
    after = f", {duration(since_merge)} after merge" if since_merge is not None else ""
    return f"🟢 Cluster {escape(name)} is Ready{after}"


def cluster_applied(name: str, agent: str, agent_kind: str, agent_name: str, sha: str, on: str = "",
                    since_merge: float | timedelta | None = None) -> str:
    """Step one of a created cluster going live: the management cluster's agent applied it.

    `🏗️ Cluster edge-2: Flux kustomization clusters applied 1a2b3c4 on mgmt, 4m after merge — waiting
    for the cluster to report Ready`.
    """
    after = f", {duration(since_merge)} after merge" if since_merge is not None else ""
    where = f" on {escape(on)}" if on else ""
    who_applied = agent_words(agent, agent_kind, agent_name)
    return (f"🏗️ Cluster {escape(name)}: {who_applied} applied {escape(short_sha(sha))}{where}{after}"
            " — waiting for the cluster to report Ready")


#: Where a created cluster's manifests are applied, when the event does not name the cluster.
MANAGEMENT_CLUSTER = "the management cluster"


def cluster_label(name: str) -> str:
    """A created cluster where a sentence expects an environment (`No deploy event for cluster x`)."""
    return f"cluster {name}"


#: The root's status between the two steps of `create cluster` (plain text).
CLUSTER_APPLIED_STATUS = "applied, waiting for the cluster to report Ready"


def cluster_ready_status(name: str) -> str:
    """The root's status once the new cluster is Ready (plain text, like `status_line`)."""
    return f"cluster {name} is Ready"


def cluster_ready_line(name: str, *, pr: str, requester: str, approvers: Sequence[str],
                       since_merge: float | timedelta | None) -> str:
    """`🟢 cluster edge-2 Ready · PR #42 by @alice, approved by @bob · 14m after merge` (deploy channel)."""
    by = f"{pr} by {who(requester)}" if pr else f"by {who(requester)}"
    if approvers:
        by += f", approved by {people(approvers)}"
    parts = [f"🟢 cluster {escape(name)} Ready", by]
    if since_merge is not None:
        parts.append(f"{duration(since_merge)} after merge")
    return " · ".join(parts)


# --------------------------------------------------------------------------------------------- deploy channel


def deploy_line(
    *,
    deployed_ok: bool,
    env: str,
    changes: str,
    pr: str,
    requester: str,
    approvers: Sequence[str],
    since_merge: float | timedelta | None,
    reason: str = "",
) -> str:
    """`🚀 production · cache replicas 1 → 3 · PR #42 by @alice, approved by @bob · live 1m 42s after merge`.

    `changes` and `pr` are already mrkdwn (built with `change_words` / `pr_link`).
    """
    parts = [f"{'🚀' if deployed_ok else '❌'} {escape(env)}", changes]
    by = f"{pr} by {who(requester)}" if pr else f"by {who(requester)}"
    if approvers:
        by += f", approved by {people(approvers)}"
    parts.append(by)
    if deployed_ok:
        parts.append(f"live {duration(since_merge)} after merge" if since_merge is not None else "live")
    else:
        parts.append(f"failed: {escape(clip(reason, 500))}" if reason else "failed")
    return " · ".join(p for p in parts if p)


def change_words(app: str, name: str, old: str | None, new: str) -> str:
    """`cache replicas 1 → 3` for the one-line deploy channel."""
    return " ".join([escape(clip(app, 60)), escape(clip(name, 60)),
                     f"{escape(clip(old if old is not None else UNSET, 80))} → {escape(clip(new, 80))}"])


# --------------------------------------------------------------------------------------------- results


RESULT_EMOJI: dict[str, str] = {
    "approved": "✅",
    "approval-recorded": "✅",
    "merged": "🔀",
    "closed": "🚫",
    "merge-blocked": "⛔",
}


def no_change(message: str) -> str:
    return f"👌 {escape(message or 'Nothing to change.')}"


def info_title(title: str) -> str:
    return f"*{escape(clip(title, 300))}*"


def request_update(event: str, message: str) -> str:
    return f"{RESULT_EMOJI.get(event, 'ℹ️')} {escape_keeping_mentions(message)}"


def dry_run() -> str:
    return "Dry run: nothing was proposed."


def opened_pr(pr: str, existing: bool, branch: str, base: str) -> str:
    """What the requester reads after `run`: which PR carries the change (the thread has the details)."""
    word = "Already open" if existing else "Opened"
    return f"📬 {word}: {pr} (`{escape(branch)}` → `{escape(base)}`)"


def proposed_fallback(verb: str, title: str, outcome: str) -> str:
    """`outcome` is already mrkdwn (`dry_run()` or `opened_pr(...)`)."""
    return f"{verb_emoji(verb)} {escape(clip(title, 200))} · {outcome}"


def lines_cut(count: int) -> str:
    return f"… {plural(count, 'more line')}"


def error(text: str, hint: str = "") -> str:
    """Errors say what went wrong and what to do, in the words of the CommandError."""
    tail = f"\n{escape(hint)}" if hint else ""
    return f"⚠️ {escape(text)}{tail}"


def generic_error(reference: str) -> str:
    return (f"⚠️ Something went wrong on our side and nothing was changed. "
            f"Please try again; if it keeps failing, tell the opsbot admins reference `{escape(reference)}`.")


# -------------------------------------------------------------------------------------------- Slack transport


def working(command: str) -> str:
    """The immediate answer to `/ops ...`: Slack wants one within 3 s, and the work takes longer."""
    shown = clip(" ".join(command.split()), 200)
    return f"⏳ Working on `{escape(shown)}`…" if shown else "⏳ Working on it…"


RESTARTING = "opsbot is restarting. Nothing was changed; try again in a minute."


def thread_link(url: str) -> str:
    """A link to a request's thread (URLs with `<`, `>` or `|` cannot be linked in mrkdwn)."""
    if not url or any(c in url for c in "<>|"):
        return "its thread"
    return f"<{url}|its thread>"


def already_open(pr: str, thread_url: str) -> str:
    """Said instead of a second root when the same change is asked again (same PR, same thread)."""
    what = pr or "The pull request"
    return f"📬 {what} is already open for this change; follow it in {thread_link(thread_url)}."


def see_thread(thread_url: str) -> str:
    return f"Follow the request in {thread_link(thread_url)}."


def approve_on_github(pr: str) -> str:
    """approvals_mode=github: the Approve button cannot approve; reviews on GitHub count."""
    where = pr or "the pull request"
    return f"👀 Approvals for this request are GitHub reviews: approve on GitHub: {where}. opsbot sees it."


def not_in_channel(pr: str) -> str:
    """Slack said not_in_channel: only a member of the channel can fix it, so say exactly how."""
    opened = f" {pr} is open." if pr else ""
    return (f"🙈 I can't post in this channel because I'm not a member of it.{opened} "
            "Invite me with `/invite @opsbot`, then run the command again to get the request thread.")


def cannot_post(error: str, pr: str) -> str:
    """Any other permanent refusal (channel_not_found, invalid_auth, ...): an admin must act."""
    opened = f" {pr} is open." if pr else ""
    return (f"⚠️ Slack refused my message (`{escape(clip(error, 100))}`).{opened} "
            "Ask the opsbot admins to check the Slack app's setup.")


def post_later(pr: str) -> str:
    """Slack was busy (rate limited, 5xx) for longer than a command can wait."""
    opened = f" {pr} is open." if pr else ""
    return (f"⏳ Slack is busy and the request thread could not be posted yet.{opened} "
            "Run the same command again in a minute to get the thread; nothing is opened twice.")


UNKNOWN_BUTTON = "That button is not one opsbot knows any more. Nothing was changed."


# --------------------------------------------------------------------------------------------- policies

_ESCAPED_MENTION = re.compile(r"&lt;@([UW][A-Z0-9]{2,})&gt;")


def policy_notice(text: str, by: str = "", key: str = "", at: str = "") -> str:
    """A policy message (freeze, unfreeze, override, gate results, auto-revert) for a thread or the
    deploy channel. Everything typed by people is escaped; only real user mentions stay live."""
    return _ESCAPED_MENTION.sub(r"<@\1>", escape(clip(text, 2900)))
