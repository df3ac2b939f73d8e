"""Block Kit rendering of requests, replies and results: pure functions from opsbot's data to dicts.

Kept free of Slack libraries so the shape of every message can be tested (snapshots, limits,
escaping) without a server, and so the Slack adapter only has to post what it gets. Wording lives in
`opsbot.chat.texts`; this module arranges it and keeps each message inside Slack's limits, because
Slack refuses a whole message (`invalid_blocks`) when one block is over.

Every function returns `{"text": fallback, "blocks": [...]}`, ready for `chat.postMessage`,
`chat.update`, `chat.postEphemeral` or a response_url.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import timedelta
from typing import Any, TypedDict

from opsbot.chat import texts
from opsbot.core.model import Change, Check, FieldChange, Outcome, Request, RequestState
from opsbot.core.results import Info, NoChange, Proposed, RequestUpdate, Result

Block = dict[str, Any]


class Rendered(TypedDict):
    text: str
    blocks: list[Block]


# Slack's limits (docs.slack.dev/reference/block-kit): a message over any of them is refused whole.
SECTION_TEXT_MAX = 3000
CONTEXT_TEXT_MAX = 3000
MAX_BLOCKS = 50
BUTTON_TEXT_MAX = 75
BUTTON_VALUE_MAX = 2000
BUTTON_URL_MAX = 3000
ID_MAX = 255
#: Slack truncates `text` at 40,000; the fallback is for notifications, so much shorter is kinder.
FALLBACK_MAX = 3000

#: How many field changes the root's fact line lists before saying "+N more changes".
MAX_FACT_FIELDS = 6
#: A diff line longer than this (minified JSON, a certificate) is clipped so one line cannot eat the preview.
DIFF_LINE_MAX = 200

ACTION_APPROVE = "opsbot_approve"
ACTION_MERGE = "opsbot_merge"
ACTION_CANCEL = "opsbot_cancel"
ACTION_REVIEW = "opsbot_review"
ACTIONS = (ACTION_APPROVE, ACTION_MERGE, ACTION_CANCEL, ACTION_REVIEW)

_ROOT_KINDS = ("title", "diff", "checks", "notes", "status", "actions")


# --------------------------------------------------------------------------------------------- primitives


def _fit(text: str, limit: int) -> str:
    """Clip mrkdwn to `limit` characters without leaving half an entity (`&am`) or link (`<http…`)."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    cut = re.sub(r"&[a-z]*$", "", cut)
    cut = re.sub(r"<[^>]*$", "", cut)
    if cut.count("```") % 2:
        cut = cut[: max(limit - 4, 0)].rstrip("`") + "```"
        return _fit(cut, limit) if len(cut) > limit else cut
    return cut + "…"


def _mrkdwn(text: str, limit: int = SECTION_TEXT_MAX) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": _fit(text, limit) or " "}


def _plain(text: str, limit: int) -> dict[str, Any]:
    return {"type": "plain_text", "text": texts.clip(text, limit), "emoji": True}


def _section(text: str, block_id: str | None = None) -> Block:
    block: Block = {"type": "section", "text": _mrkdwn(text)}
    if block_id:
        block["block_id"] = block_id
    return block


def _context(items: Sequence[str], block_id: str | None = None) -> Block:
    block: Block = {"type": "context", "elements": [_mrkdwn(t, CONTEXT_TEXT_MAX) for t in items[:10]]}
    if block_id:
        block["block_id"] = block_id
    return block


def _confirm(title: str, text: str, yes: str, no: str, *, danger: bool = False) -> dict[str, Any]:
    dialog: dict[str, Any] = {
        "title": _plain(title, 100),
        "text": _mrkdwn(text, 300),
        "confirm": _plain(yes, 30),
        "deny": _plain(no, 30),
    }
    if danger:
        dialog["style"] = "danger"
    return dialog


def _button(text: str, action_id: str, value: str, *, url: str = "", style: str = "",
            confirm: dict[str, Any] | None = None) -> Block:
    button: Block = {"type": "button", "action_id": action_id, "text": _plain(text, BUTTON_TEXT_MAX),
                     "value": value}
    if url:
        button["url"] = url
    if style:
        button["style"] = style
    if confirm:
        button["confirm"] = confirm
    return button


def _block_id(kind: str, request: Request, content: object) -> str:
    """`kind-<digest>`: a new id whenever the block or the request's state changes.

    Slack keeps client-side state per block_id, so an updated message that reuses an id can keep
    showing the old buttons; hashing the content and state gives a fresh id exactly when needed.
    """
    raw = json.dumps([request.id, str(request.state), content], sort_keys=True, default=str)
    return f"{kind}-{hashlib.sha256(raw.encode()).hexdigest()[:16]}"[:ID_MAX]


def _single(line: str) -> Rendered:
    return {"text": _fit(line, FALLBACK_MAX), "blocks": [_section(line)]}


# --------------------------------------------------------------------------------------------- diff preview


def _condense_diff(diff: str) -> list[str]:
    """A unified diff as a reviewer skims it in chat: file names, then the changed and context lines."""
    out: list[str] = []
    old_path = ""
    hunks_in_file = 0
    for line in diff.splitlines():
        if line.startswith(("diff --git ", "index ", "new file mode", "deleted file mode", "similarity index",
                            "rename from", "rename to", "old mode", "new mode", "\\ No newline")):
            continue
        if line.startswith("--- "):
            old_path = line[4:].removeprefix("a/")
            continue
        if line.startswith("+++ "):
            new_path = line[4:].removeprefix("b/")
            out.append(old_path if new_path == "/dev/null" else new_path)
            hunks_in_file = 0
            continue
        if line.startswith("@@"):
            if hunks_in_file:
                out.append("  ⋯")
            hunks_in_file += 1
            continue
        out.append(line)
    return out


def diff_preview(diff: str, limit: int = SECTION_TEXT_MAX) -> tuple[str, int]:
    """The diff as a mrkdwn code block within `limit` characters, and how many lines were cut.

    The cut is said inside the same text, so the preview never looks complete when it is not.
    """
    lines = [texts.escape(texts.clip(line, DIFF_LINE_MAX)).replace("```", "`\u200b``")
             for line in _condense_diff(diff)]
    if not lines:
        return "", 0
    fence_open, fence_close = "```\n", "\n```"
    whole = fence_open + "\n".join(lines) + fence_close
    if len(whole) <= limit:
        return whole, 0
    reserve = len("\n_" + texts.diff_cut(len(lines)) + "_")
    budget = limit - len(fence_open) - len(fence_close) - reserve
    kept: list[str] = []
    used = 0
    for line in lines:
        cost = len(line) + (1 if kept else 0)
        if used + cost > budget:
            break
        kept.append(line)
        used += cost
    cut = len(lines) - len(kept)
    body = "\n".join(kept) if kept else "⋯"
    return f"{fence_open}{body}{fence_close}\n_{texts.diff_cut(cut)}_", cut


# --------------------------------------------------------------------------------------------- request root


def _field_changes(request: Request, change: Change | None) -> list[FieldChange]:
    if change is not None:
        return list(change.fields)
    out: list[FieldChange] = []
    for f in request.fields:
        if isinstance(f, Mapping) and f.get("field") and f.get("new") is not None:
            old = f.get("old")
            out.append(FieldChange(app=str(f.get("app") or request.app), env=str(f.get("env") or request.env),
                                   field=str(f["field"]), old=None if old is None else str(old),
                                   new=str(f["new"]), file=str(f.get("file") or "")))
    return out


def _facts(app: str, env: str, fields: Sequence[FieldChange]) -> list[str]:
    facts: list[str] = []
    if app:
        facts.append(texts.fact("App", app))
    if env:
        facts.append(texts.fact("Env", env))
    for f in fields[:MAX_FACT_FIELDS]:
        facts.append(texts.field_change(f.field, f.old, f.new, app="" if f.app == app else f.app))
    if len(fields) > MAX_FACT_FIELDS:
        facts.append(texts.more_fields(len(fields) - MAX_FACT_FIELDS))
    return facts


def _title_text(request: Request, change: Change | None) -> str:
    return request.title or (change.title if change else "") or texts.fallback_title(
        request.verb, request.app, request.env)


def _default_status(request: Request) -> str:
    return texts.status_line(str(request.state), needed=request.approvals_needed, merge_sha=request.merge_sha,
                             env=request.env)


def _checks_block(checks: Sequence[Check]) -> str:
    return "   ".join(texts.check_item(c.name, c.ok, c.detail, skipped=c.skipped) for c in checks)


def _actions(request: Request) -> Block | None:
    """The buttons of an open request; none once it is merged or over, so nobody clicks a dead end."""
    state = RequestState(request.state)
    if not state.is_open:
        return None
    value = request.id
    if len(value) > BUTTON_VALUE_MAX:
        raise ValueError(f"request id longer than Slack's {BUTTON_VALUE_MAX}-character button value")
    elements: list[Block] = []
    # Slack refuses a button URL that is not a web link (the local forge's file:// PRs have none).
    if request.pr_url.startswith(("http://", "https://")) and len(request.pr_url) <= BUTTON_URL_MAX:
        elements.append(_button(texts.BUTTON_REVIEW, ACTION_REVIEW, value, url=request.pr_url))
    elements.append(_button(texts.BUTTON_APPROVE, ACTION_APPROVE, value,
                            style="primary" if state is RequestState.PROPOSED else ""))
    elements.append(_button(
        texts.BUTTON_MERGE, ACTION_MERGE, value, style="primary" if state is RequestState.APPROVED else "",
        confirm=_confirm(texts.CONFIRM_MERGE_TITLE, texts.confirm_merge_text(request.pr_number, request.env),
                         texts.CONFIRM_MERGE_YES, texts.CONFIRM_MERGE_NO)))
    elements.append(_button(
        texts.BUTTON_CANCEL, ACTION_CANCEL, value, style="danger",
        confirm=_confirm(texts.CONFIRM_CANCEL_TITLE, texts.confirm_cancel_text(request.pr_number),
                         texts.CONFIRM_CANCEL_YES, texts.CONFIRM_CANCEL_NO, danger=True)))
    return {"type": "actions", "elements": elements}


def _root(request: Request, title: str, status_text: str, parts: list[tuple[str, Block]]) -> Rendered:
    blocks = [{**block, "block_id": _block_id(kind, request, block)} for kind, block in parts]
    fallback = texts.root_fallback(request.verb, title, request.pr_number, status_text)
    return {"text": _fit(fallback, FALLBACK_MAX), "blocks": blocks}


def _title_block(request: Request, change: Change | None) -> Block:
    facts = _facts(request.app, request.env, _field_changes(request, change))
    pr = texts.pr_link(request.pr_number, request.pr_url)
    if pr:
        facts.append(pr)
    if request.requester:
        facts.append(texts.requested_by(request.requester))
    if RequestState(request.state).is_open:  # after the merge, "needs 1 approval" would read as a problem
        facts.append(texts.approvals_needed(request.approvals_needed))
    return _section(texts.title_line(request.verb, _title_text(request, change)) + "\n" + " · ".join(facts))


def request_root(
    request: Request,
    change: Change | None = None,
    diff: str = "",
    status_line: str = "",
    checks: Sequence[Check] | None = None,
) -> Rendered:
    """The thread root of DESIGN §9: what is asked, the diff, the checks, the status and the buttons.

    `status_line` is the plain phrase after "Status:" (default: derived from the request's state);
    it is what `chat.update` changes as the request moves. `checks` default to the change's checks.
    """
    title = _title_text(request, change)
    status_text = status_line or _default_status(request)
    parts: list[tuple[str, Block]] = [("title", _title_block(request, change))]
    preview, _cut = diff_preview(diff)
    if preview:
        parts.append(("diff", _section(preview)))
    checks = list(change.checks if checks is None and change is not None else checks or ())
    if checks:
        parts.append(("checks", _context([_checks_block(checks)])))
    if change is not None and change.notes:
        parts.append(("notes", _context([texts.note(n) for n in change.notes])))
    parts.append(("status", _context([texts.status(status_text)])))
    actions = _actions(request)
    if actions is not None:
        parts.append(("actions", actions))

    return _root(request, title, status_text, parts)


def root_update(previous_blocks: Sequence[Block], request: Request, status_line: str = "") -> Rendered:
    """The root after a transition, from the blocks it shows now (e.g. `body["message"]["blocks"]`).

    The diff, checks and notes are not stored with the request, so an update keeps them from the
    message; the title line, status and buttons are rendered anew from the request (fresh block_ids).
    """
    kept: dict[str, Block] = {}
    for block in previous_blocks:
        kind = str(block.get("block_id", "")).split("-", 1)[0]
        if kind in ("title", "diff", "checks", "notes"):
            kept[kind] = {k: v for k, v in block.items() if k != "block_id"}
    if "title" not in kept:
        return request_root(request, status_line=status_line)
    title = _title_text(request, None)
    status_text = status_line or _default_status(request)
    parts: list[tuple[str, Block]] = [("title", _title_block(request, None))]
    parts += [(kind, kept[kind]) for kind in ("diff", "checks", "notes") if kind in kept]
    parts.append(("status", _context([texts.status(status_text)])))
    actions = _actions(request)
    if actions is not None:
        parts.append(("actions", actions))
    return _root(request, title, status_text, parts)


# --------------------------------------------------------------------------------------------- thread replies


_REPLIES: dict[str, Callable[..., str]] = {
    "approved": texts.approved,
    "merged": texts.merged,
    "pushed": texts.pushed,
    "rebased": texts.rebased,
    "updated": texts.updated,
    "deployed": texts.deployed,
    "failed": texts.failed,
    "superseded": texts.superseded,
    "closed": texts.closed,
    "warning": texts.no_event_warning,
    "cluster_ready": texts.cluster_ready,
    "cluster_applied": texts.cluster_applied,
    "policy": texts.policy_notice,
}
REPLY_KINDS = tuple(_REPLIES)


def thread_reply(kind: str, /, **facts: Any) -> Rendered:
    """One reply per transition in the request's thread. Facts per kind (see `opsbot.chat.texts`):

    approved(by, count=1, needed=1) · merged(by, sha) ·
    deployed(env, agent, agent_kind, agent_name, sha, since_merge=None) · failed(env, reason, message) ·
    superseded(pr_number=None, pr_url="", request_id="") · closed(by="", reason="") ·
    warning(env, minutes, agent="", agent_kind="", agent_name="") · cluster_ready(name, since_merge=None) ·
    cluster_applied(name, agent, agent_kind, agent_name, sha, on="", since_merge=None)

    `agent` is the DeployEvent source (flux, argocd, watch); `since_merge` is seconds or a timedelta.
    """
    try:
        render = _REPLIES[kind]
    except KeyError:
        raise ValueError(f"unknown reply kind {kind!r}; one of {', '.join(REPLY_KINDS)}") from None
    return _single(render(**facts))


# --------------------------------------------------------------------------------------------- deploy channel


def _change_words(request: Request) -> str:
    fields = _field_changes(request, None)
    if not fields:
        title = request.title or texts.fallback_title(request.verb, request.app, "")
        return texts.escape(texts.clip(title, 200))
    words = [texts.change_words(f.app, f.field, f.old, f.new) for f in fields[:MAX_FACT_FIELDS]]
    if len(fields) > MAX_FACT_FIELDS:
        words.append(texts.more_fields(len(fields) - MAX_FACT_FIELDS))
    return ", ".join(words)


def deploy_channel_line(
    request: Request,
    *,
    outcome: Outcome | RequestState | str,
    approvers: Iterable[str] = (),
    since_merge: float | timedelta | None = None,
    reason: str = "",
    env: str | None = None,
) -> Rendered:
    """One line per outcome for the deploy channel, readable without opening the thread.

    `env` names where it happened when the request has no env (a created cluster: the management
    cluster).
    """
    ok = str(outcome) in (Outcome.SUCCEEDED, RequestState.DEPLOYED)
    line = texts.deploy_line(
        deployed_ok=ok,
        env=request.env if env is None else env,
        changes=_change_words(request),
        pr=texts.pr_link(request.pr_number, request.pr_url),
        requester=request.requester,
        approvers=list(approvers),
        since_merge=since_merge,
        reason=reason,
    )
    return _single(line)


def cluster_ready_channel_line(
    request: Request, *, approvers: Iterable[str] = (), since_merge: float | timedelta | None = None
) -> Rendered:
    """The deploy channel's line when a cluster made by `create cluster` reports Ready."""
    return _single(texts.cluster_ready_line(
        request.app,
        pr=texts.pr_link(request.pr_number, request.pr_url),
        requester=request.requester,
        approvers=list(approvers),
        since_merge=since_merge,
    ))


# --------------------------------------------------------------------------------------------- results


def _lines_blocks(lines: Sequence[str], room: int) -> list[Block]:
    """Escaped lines packed into as few sections as fit, saying how many did not fit in `room` blocks."""
    blocks: list[Block] = []
    chunk: list[str] = []
    size = 0
    for i, raw in enumerate(lines):
        line = texts.escape(texts.clip(raw, SECTION_TEXT_MAX - 100))
        if chunk and size + len(line) + 1 > SECTION_TEXT_MAX:
            if len(blocks) == room - 1:
                blocks.append(_context([texts.lines_cut(len(lines) - i + len(chunk))]))
                return blocks
            blocks.append(_section("\n".join(chunk)))
            chunk, size = [], 0
        chunk.append(line)
        size += len(line) + 1
    if chunk:
        blocks.append(_section("\n".join(chunk)))
    return blocks


def _info(result: Info) -> Rendered:
    blocks: list[Block] = []
    if result.title:
        blocks.append(_section(texts.info_title(result.title)))
    blocks += _lines_blocks(result.lines, MAX_BLOCKS - len(blocks))
    if not blocks:
        blocks.append(_section(texts.escape(result.text() or " ")))
    return {"text": _fit(texts.escape(result.text()), FALLBACK_MAX), "blocks": blocks}


def _proposed(result: Proposed) -> Rendered:
    change = result.change
    if change is None:
        return _single(texts.no_change(""))
    head = texts.title_line(change.intent.verb, change.title)
    facts = _facts(change.app, change.env, change.fields)
    if result.pr is not None:
        facts.append(texts.pr_link(result.pr.number, result.pr.url))
    blocks: list[Block] = [_section(head + ("\n" + " · ".join(facts) if facts else ""))]
    preview, _cut = diff_preview(result.diff)
    if preview:
        blocks.append(_section(preview))
    if change.checks:
        blocks.append(_context([_checks_block(change.checks)]))
    if change.notes:
        blocks.append(_context([texts.note(n) for n in change.notes]))
    if result.pr is not None:
        outcome = texts.opened_pr(texts.pr_link(result.pr.number, result.pr.url), result.existing,
                                  result.pr.branch, result.pr.base_branch)
    else:
        outcome = texts.dry_run()
    blocks.append(_context([outcome]))
    fallback = texts.proposed_fallback(change.intent.verb, change.title, outcome)
    return {"text": _fit(fallback, FALLBACK_MAX), "blocks": blocks}


def result_message(result: Result) -> Rendered:
    """A command's answer to the person who asked (ephemeral-friendly: no buttons, no thread state)."""
    if isinstance(result, Proposed):
        return _proposed(result)
    if isinstance(result, NoChange):
        return _single(texts.no_change(result.message))
    if isinstance(result, RequestUpdate):
        return _single(texts.request_update(result.event, result.message or result.text()))
    if isinstance(result, Info):
        return _info(result)
    return _single(texts.escape(result.text()))


def error_message(text: str, *, hint: str = "") -> Rendered:
    """A refusal or bad input, shown as is (CommandError wording) with what to do next."""
    return _single(texts.error(text, hint))


def internal_error_message(reference: str) -> Rendered:
    """Anything that is not a CommandError: no details to the user, a reference to find the logs."""
    return _single(texts.generic_error(reference))


def with_note(rendered: Rendered, line: str) -> Rendered:
    """`rendered` plus one context line (mrkdwn from `texts`, e.g. a link to the request's thread).

    The note replaces the last block when the message is already at Slack's block limit, so adding
    a link can never turn an accepted message into `invalid_blocks`.
    """
    out = list(rendered["blocks"])[: MAX_BLOCKS - 1]
    out.append(_context([line]))
    return {"text": rendered["text"], "blocks": out}


def policy_notice(text: str) -> Rendered:
    """A policy line for the deploy channel (the same words the threads get)."""
    return _single(texts.policy_notice(text))


def notice(line: str) -> Rendered:
    """One line of mrkdwn already built (and escaped) by `opsbot.chat.texts`, as a message."""
    return _single(line)
