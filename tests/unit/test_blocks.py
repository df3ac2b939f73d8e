"""What people see in Slack: snapshots of every message shape, plus the rules Slack enforces.

Snapshots live in tests/fixtures/blocks/<name>.json. A missing snapshot fails; to write or rewrite
them after an intended wording change, run with OPSBOT_UPDATE_SNAPSHOTS=1 and review the diff.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from opsbot.chat import blocks, texts
from opsbot.chat.blocks import Rendered
from opsbot.core.model import (
    Change,
    Check,
    Deploy,
    FieldChange,
    Outcome,
    Promote,
    PullRequest,
    Request,
    RequestState,
    Scale,
    Status,
)
from opsbot.core.results import Info, NoChange, Proposed, RequestUpdate
from tests.doubles.slack import validate_blocks

SNAPSHOTS = Path(__file__).resolve().parent.parent / "fixtures" / "blocks"
UPDATE = os.environ.get("OPSBOT_UPDATE_SNAPSHOTS") == "1"

DIFF = """\
diff --git a/overlays/production/kustomization.yaml b/overlays/production/kustomization.yaml
index 3f1c2a1..9be7d10 100644
--- a/overlays/production/kustomization.yaml
+++ b/overlays/production/kustomization.yaml
@@ -3,3 +3,6 @@ kind: Kustomization
 resources:
   - ../../base
+replicas:
+  - name: cache
+    count: 3
"""

SCALE = Scale(app="cache", env="production", replicas=3)
FIELD = FieldChange("cache", "production", "replicas", "1", "3", "overlays/production/kustomization.yaml")
CHECKS = (Check("YAML", True), Check("schema", True, "k8s 1.37"), Check("kustomize build", True))
CHANGE = Change(SCALE, "main", "0" * 40, (), (FIELD,), "Scale cache to 3 replicas in production", CHECKS)
PR_URL = "https://github.com/acme/fleet/pull/42"


def request(state: RequestState = RequestState.PROPOSED, **kw: Any) -> Request:
    values: dict[str, Any] = {
        "id": "R42",
        "intent_key": SCALE.key(),
        "command": "scale cache 3 in production",
        "verb": "scale",
        "app": "cache",
        "env": "production",
        "requester": "U0ALICE",
        "state": state,
        "pr_number": 42,
        "pr_url": PR_URL,
        "title": CHANGE.title,
        "approvals_needed": 1,
        "merge_sha": "",
        "fields": [FIELD.__dict__],
    }
    values.update(kw)
    return Request(**values)


def big_diff(lines: int) -> str:
    body = "".join(f"+  key{i:04d}: value-{i:04d}-{'x' * 30}\n" for i in range(lines))
    return f"--- a/values-production.yaml\n+++ b/values-production.yaml\n@@ -1,0 +1,{lines} @@\n{body}"


PROMOTE = Promote(app="web", target="production", source="staging")
PROMOTE_CHANGE = Change(
    PROMOTE,
    "main",
    "1" * 40,
    (),
    (
        FieldChange(
            "web", "production", "image", "ghcr.io/acme/web:1.7.3", "ghcr.io/acme/web:1.8.0", "p/web.yaml"
        ),
        FieldChange(
            "worker",
            "production",
            "image",
            "ghcr.io/acme/worker:1.7.3",
            "ghcr.io/acme/worker:1.8.0",
            "p/worker.yaml",
        ),
    ),
    "Promote web from staging to production",
    CHECKS,
    notes=("worker shares the web image and moves with it",),
)

CASES: dict[str, Callable[[], Rendered]] = {
    "root_proposed": lambda: blocks.request_root(request(), CHANGE, DIFF),
    "root_approved_two_needed": lambda: blocks.request_root(
        request(RequestState.APPROVED, approvals_needed=2), CHANGE, DIFF, "approved, ready to merge"
    ),
    "root_merged": lambda: blocks.request_root(
        request(RequestState.MERGED, merge_sha="1a2b3c4d5e6f"), CHANGE, DIFF
    ),
    "root_deployed": lambda: blocks.request_root(request(RequestState.DEPLOYED), CHANGE, DIFF),
    "root_failed": lambda: blocks.request_root(
        request(RequestState.FAILED), CHANGE, DIFF, "failed in production: HealthCheckFailed"
    ),
    "root_from_stored_request": lambda: blocks.request_root(request(), None, "", ""),
    "root_promote_two_apps_with_note": lambda: blocks.request_root(
        request(
            verb="promote",
            app="web",
            title=PROMOTE_CHANGE.title,
            approvals_needed=0,
            pr_number=7,
            pr_url="https://github.com/acme/fleet/pull/7",
        ),
        PROMOTE_CHANGE,
        "",
    ),
    "root_truncated_diff": lambda: blocks.request_root(request(), CHANGE, big_diff(200)),
    "root_update_after_merge": lambda: blocks.root_update(
        blocks.request_root(request(), CHANGE, DIFF)["blocks"],
        request(RequestState.MERGED, merge_sha="1a2b3c4d5e6f"),
    ),
    "reply_approved": lambda: blocks.thread_reply("approved", by="U0BOB"),
    "reply_approved_1_of_2": lambda: blocks.thread_reply("approved", by="U0BOB", count=1, needed=2),
    "reply_merged": lambda: blocks.thread_reply("merged", by="U0BOB", sha="1a2b3c4d5e6f"),
    "reply_deployed": lambda: blocks.thread_reply(
        "deployed",
        env="production",
        agent="flux",
        agent_kind="Kustomization",
        agent_name="apps",
        sha="1a2b3c4d5e6f",
        since_merge=102,
    ),
    "reply_failed": lambda: blocks.thread_reply(
        "failed",
        env="production",
        reason="HealthCheckFailed",
        message="deployment cache not ready (timeout 5m)",
    ),
    "reply_superseded": lambda: blocks.thread_reply(
        "superseded", pr_number=43, pr_url="https://github.com/acme/fleet/pull/43"
    ),
    "reply_closed": lambda: blocks.thread_reply("closed", by="github:carol", reason="the branch was deleted"),
    "reply_warning": lambda: blocks.thread_reply(
        "warning", env="production", minutes=10, agent="argocd", agent_kind="Application", agent_name="cache"
    ),
    "reply_cluster_ready": lambda: blocks.thread_reply("cluster_ready", name="prod-2", since_merge=723),
    "deploy_line_succeeded": lambda: blocks.deploy_channel_line(
        request(RequestState.DEPLOYED), outcome=Outcome.SUCCEEDED, approvers=["U0BOB"], since_merge=102
    ),
    "deploy_line_failed": lambda: blocks.deploy_channel_line(
        request(RequestState.FAILED),
        outcome=Outcome.FAILED,
        reason="HealthCheckFailed: deployment cache not ready (timeout 5m)",
    ),
    "result_info_status": lambda: blocks.result_message(
        Info(
            Status(app="cache"),
            title="cache",
            lines=(
                "production: 3 replicas, image cache:7.2 (R42 deployed)",
                "staging: 1 replica, image cache:7.2",
            ),
        )
    ),
    "result_no_change": lambda: blocks.result_message(
        NoChange(
            Deploy(app="web", version="1.8.0", env="production"),
            message="web is already at 1.8.0 in production.",
        )
    ),
    "result_request_update": lambda: blocks.result_message(
        RequestUpdate(
            None,
            request=request(),
            event="merge-blocked",
            message="R42 needs 1 approval from someone other than the requester.",
        )
    ),
    "result_proposed_dry_run": lambda: blocks.result_message(Proposed(SCALE, change=CHANGE, diff=DIFF)),
    "result_proposed_opened": lambda: blocks.result_message(
        Proposed(
            SCALE,
            change=CHANGE,
            diff=DIFF,
            request=request(),
            pr=PullRequest(42, PR_URL, "opsbot/scale-cache-production-1a2b", "main", "2" * 40, "open"),
        )
    ),
    "error_unknown_env": lambda: blocks.error_message(
        'Unknown environment "prodution". Did you mean "production"?',
        hint="Environments: dev, staging, production.",
    ),
    "error_internal": lambda: blocks.internal_error_message("e-7f3a9c"),
}


# --------------------------------------------------------------------------------------------- snapshots


@pytest.mark.parametrize("name", sorted(CASES))
def test_snapshot(name: str) -> None:
    rendered = CASES[name]()
    path = SNAPSHOTS / f"{name}.json"
    if UPDATE:
        SNAPSHOTS.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(rendered, indent=2, ensure_ascii=False) + "\n")
    assert path.exists(), f"missing snapshot {path}; run with OPSBOT_UPDATE_SNAPSHOTS=1 and review it"
    assert rendered == json.loads(path.read_text()), f"{name} differs from {path}"


def test_every_case_has_a_snapshot_and_no_snapshot_is_stale() -> None:
    on_disk = {p.stem for p in SNAPSHOTS.glob("*.json")}
    assert set(CASES) - on_disk == set(), "missing snapshots: run with OPSBOT_UPDATE_SNAPSHOTS=1"
    assert on_disk - set(CASES) == set(), "snapshots without a case: delete them"


# --------------------------------------------------------------------------------------------- Slack's limits


def walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def assert_within_limits(rendered: Rendered) -> None:
    assert rendered["text"]
    assert validate_blocks(rendered["blocks"]) == []
    assert len(rendered["blocks"]) <= 50
    ids = [b["block_id"] for b in rendered["blocks"] if "block_id" in b]
    assert len(ids) == len(set(ids))
    for b in rendered["blocks"]:
        assert len(b.get("block_id", "")) <= 255
        if b["type"] == "section":
            assert len(b["text"]["text"]) <= 3000
    for node in walk(rendered["blocks"]):
        if node.get("type") == "button":
            assert len(node["text"]["text"]) <= 75
            assert len(node.get("value", "")) <= 2000
            assert len(node["action_id"]) <= 255
            assert len(node.get("url", "")) <= 3000


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_message_is_within_slack_limits(name: str) -> None:
    assert_within_limits(CASES[name]())


def action_ids(rendered: Rendered) -> list[str]:
    return [e["action_id"] for b in rendered["blocks"] if b["type"] == "actions" for e in b["elements"]]


@pytest.mark.parametrize("state", [RequestState.PROPOSED, RequestState.APPROVED])
def test_open_requests_have_the_four_buttons(state: RequestState) -> None:
    rendered = blocks.request_root(request(state), CHANGE, DIFF)
    assert action_ids(rendered) == ["opsbot_review", "opsbot_approve", "opsbot_merge", "opsbot_cancel"]
    buttons = {e["action_id"]: e for b in rendered["blocks"] if b["type"] == "actions" for e in b["elements"]}
    assert {e["value"] for e in buttons.values()} == {"R42"}
    assert buttons["opsbot_review"]["url"] == PR_URL
    assert buttons["opsbot_cancel"]["style"] == "danger"
    assert buttons["opsbot_cancel"]["confirm"]["style"] == "danger"
    primary = [aid for aid, e in buttons.items() if e.get("style") == "primary"]
    assert primary == (["opsbot_approve"] if state is RequestState.PROPOSED else ["opsbot_merge"])


@pytest.mark.parametrize("state", [s for s in RequestState if not s.is_open])
def test_buttons_disappear_once_merged_or_final(state: RequestState) -> None:
    rendered = blocks.request_root(request(state, merge_sha="1a2b3c4"), CHANGE, DIFF)
    assert action_ids(rendered) == []
    assert not [b for b in rendered["blocks"] if b["type"] == "actions"]
    update = blocks.root_update(blocks.request_root(request(), CHANGE, DIFF)["blocks"], request(state))
    assert action_ids(update) == []


def test_block_ids_change_with_state_and_only_then() -> None:
    proposed = blocks.request_root(request(), CHANGE, DIFF)
    again = blocks.request_root(request(), CHANGE, DIFF)
    assert proposed == again
    approved = blocks.request_root(request(RequestState.APPROVED), CHANGE, DIFF)
    old_ids = {b["block_id"] for b in proposed["blocks"]}
    assert old_ids.isdisjoint(b["block_id"] for b in approved["blocks"])
    restatused = blocks.request_root(request(), CHANGE, DIFF, "waiting for approval from @sre")
    changed = [
        a["block_id"] != b["block_id"] for a, b in zip(proposed["blocks"], restatused["blocks"], strict=True)
    ]
    assert changed == [False, False, False, True, False]  # only the status block moved


def test_root_update_keeps_the_diff_and_replaces_status_and_buttons() -> None:
    before = blocks.request_root(request(), CHANGE, DIFF)
    after = blocks.root_update(before["blocks"], request(RequestState.MERGED, merge_sha="1a2b3c4d"))
    kinds = [b["block_id"].split("-")[0] for b in after["blocks"]]
    assert kinds == ["title", "diff", "checks", "status"]
    assert after["blocks"][1]["text"] == before["blocks"][1]["text"]
    assert "merged as 1a2b3c4" in after["blocks"][-1]["elements"][0]["text"]
    assert after == blocks.request_root(request(RequestState.MERGED, merge_sha="1a2b3c4d"), CHANGE, DIFF)
    # blocks that are not ours (an old message format) fall back to a root without the diff
    fallback = blocks.root_update([{"type": "section", "text": {"type": "mrkdwn", "text": "x"}}], request())
    assert [b["block_id"].split("-")[0] for b in fallback["blocks"]] == ["title", "status", "actions"]


# --------------------------------------------------------------------------------------------- diff preview


@pytest.mark.parametrize("lines", [80, 200, 5000])
def test_truncated_diff_says_how_many_lines_were_cut(lines: int) -> None:
    rendered = blocks.request_root(request(), CHANGE, big_diff(lines))
    diff_block = next(b for b in rendered["blocks"] if b["block_id"].startswith("diff-"))
    text = diff_block["text"]["text"]
    assert len(text) <= 3000
    shown = text.split("```")[1].strip("\n").splitlines()
    match = re.search(r"… (\d+) more lines? not shown", text)
    assert match, text[-200:]
    total = lines + 1  # the file name line
    assert len(shown) + int(match.group(1)) == total
    assert text.count("```") == 2


def test_short_diff_is_shown_whole_without_a_cut_note() -> None:
    preview, cut = blocks.diff_preview(DIFF)
    assert cut == 0 and "not shown" not in preview
    assert preview == (
        "```\noverlays/production/kustomization.yaml\n resources:\n   - ../../base\n"
        "+replicas:\n+  - name: cache\n+    count: 3\n```"
    )


def test_one_huge_line_cannot_eat_the_preview() -> None:
    diff = "--- a/cm.yaml\n+++ b/cm.yaml\n@@ -1 +1 @@\n-data: old\n+data: " + "z" * 50_000 + "\n+next: 1\n"
    preview, cut = blocks.diff_preview(diff)
    assert cut == 0 and "+next: 1" in preview and len(preview) <= 3000


def test_multi_file_and_new_file_diff_names_each_file() -> None:
    diff = (
        "diff --git a/a.yaml b/a.yaml\n--- a/a.yaml\n+++ b/a.yaml\n@@ -1 +1 @@\n-x: 1\n+x: 2\n@@ -9 +9 @@\n"
        "-y: 1\n+y: 2\ndiff --git a/new.yaml b/new.yaml\nnew file mode 100644\n"
        "--- /dev/null\n+++ b/new.yaml\n"
        "@@ -0,0 +1 @@\n+z: 1\n--- a/old.yaml\n+++ /dev/null\n@@ -1 +0,0 @@\n-gone: 1\n"
    )
    preview, _ = blocks.diff_preview(diff)
    assert preview.split("\n")[1:-1] == [
        "a.yaml",
        "-x: 1",
        "+x: 2",
        "  ⋯",
        "-y: 1",
        "+y: 2",
        "new.yaml",
        "+z: 1",
        "old.yaml",
        "-gone: 1",
    ]


def test_backticks_in_a_diff_do_not_close_the_code_block() -> None:
    preview, _ = blocks.diff_preview("--- a/x\n+++ b/x\n@@ -1 +1 @@\n+doc: ```rm -rf```\n")
    assert preview.count("```") == 2


# --------------------------------------------------------------------------------------------- escaping


def all_text(rendered: Rendered) -> str:
    parts = [rendered["text"]]
    parts += [n["text"] for n in walk(rendered["blocks"]) if n.get("type") in ("mrkdwn", "plain_text")]
    return "\n".join(parts)


OURS = re.compile(r"<@[UW][A-Z0-9]+>|<https?://[^<>|]+\|PR #\d+>")


def assert_no_control_sequences(text: str) -> None:
    """User text may only appear escaped: the only `<…>` left are our own mentions and PR links."""
    assert "<" not in OURS.sub("", text) and ">" not in OURS.sub("", text), text


def test_user_text_is_escaped_everywhere() -> None:
    evil = "<!channel> & <https://evil.example|click>"
    req = request(
        app=evil,
        env="prod<uction>",
        requester="<!here>",
        title=f"Scale {evil}",
        fields=[{"app": evil, "env": "x", "field": "replicas<", "old": "<1>", "new": "&3", "file": "f"}],
    )
    change = replace(
        CHANGE,
        title=f"Scale {evil}",
        checks=(Check("schema", False, evil),),
        notes=(evil,),
        fields=(FieldChange(evil, "x", "replicas", "<1>", "&3", "f"),),
    )
    outputs = [
        blocks.request_root(req, change, f"--- a/x\n+++ b/x\n@@ -1 +1 @@\n+{evil}\n", status_line=evil),
        blocks.request_root(req, None, "", status_line=evil),
        blocks.thread_reply("failed", env=evil, reason=evil, message=evil),
        blocks.thread_reply("closed", by=evil, reason=evil),
        blocks.thread_reply("approved", by=evil),
        blocks.deploy_channel_line(req, outcome="failed", approvers=[evil], reason=evil),
        blocks.error_message(evil, hint=evil),
        blocks.result_message(Info(None, title=evil, lines=(evil,))),
        blocks.result_message(NoChange(None, message=evil)),
        blocks.result_message(Proposed(SCALE, change=change, diff="")),
    ]
    for rendered in outputs:
        text = all_text(rendered)
        assert_no_control_sequences(text)
        assert "&lt;!channel&gt; &amp; &lt;https://evil.example|click&gt;" in text or "&lt;!" in text


@pytest.mark.parametrize("event", ["approved", "merged", "closed"])
def test_mentions_in_an_ephemeral_request_update_are_not_escaped_twice(event: str) -> None:
    """Issue 9 item 10: the typed `merge R1` answer showed `Merged by &lt;@U0BOB&gt;`."""
    rendered = blocks.result_message(
        RequestUpdate(None, request=request(), event=event, message="Merged by <@U0BOB> as abc1234; <!channel> <@bob>")
    )
    for text in (rendered["text"], all_text(rendered)):
        assert "by <@U0BOB> as abc1234" in text, text
        assert "&lt;@U0BOB" not in text
        assert "&lt;!channel&gt; &lt;@bob&gt;" in text  # anything but a well-formed user id stays escaped


def test_plain_text_has_no_slack_markup() -> None:
    assert texts.plain("Merged by <@bob> as abc; <@U0BOB|bob> <!here> <https://x.example/1|PR #1>") == (
        "Merged by @bob as abc; @bob @here PR #1 (https://x.example/1)")
    assert texts.plain("<file:///tmp/fleet#pr-1|PR #1> in <#C0DEPLOY|deploys>") == (
        "PR #1 (file:///tmp/fleet#pr-1) in #deploys")
    diffish = "+  image: *tag  # <x> a_b_c"
    assert texts.plain(diffish) == diffish


def test_slack_ids_become_mentions_and_github_logins_do_not() -> None:
    assert texts.who("U0BOB") == "<@U0BOB>"
    assert texts.who("W0ENTERPRISE") == "<@W0ENTERPRISE>"
    assert texts.who("github:carol") == "@carol (GitHub)"
    assert texts.who("<!here>") == "&lt;!here&gt;"


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (0, "0s"),
        (42, "42s"),
        (60, "1m"),
        (102, "1m 42s"),
        (3600, "1h"),
        (3725, "1h 2m"),
        (90061, "1d 1h"),
        (timedelta(minutes=5), "5m"),
        (-3, "0s"),
    ],
)
def test_durations(value: float | timedelta, words: str) -> None:
    assert texts.duration(value) == words


# --------------------------------------------------------------------------------------------- shapes


def test_unknown_reply_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown reply kind"):
        blocks.thread_reply("exploded", env="production")


def test_many_field_changes_are_summarised() -> None:
    fields = tuple(FieldChange(f"app{i}", "production", "image", "1", "2", f"f{i}") for i in range(20))
    rendered = blocks.request_root(
        request(fields=[f.__dict__ for f in fields]), replace(CHANGE, fields=fields), DIFF
    )
    assert "+14 more changes" in rendered["blocks"][0]["text"]["text"]
    line = blocks.deploy_channel_line(request(fields=[f.__dict__ for f in fields]), outcome="succeeded")
    assert "+14 more changes" in line["text"]


def test_long_info_stays_within_fifty_blocks_and_says_what_was_cut() -> None:
    lines = tuple(f"line {i}: " + "y" * 200 for i in range(2000))
    rendered = blocks.result_message(Info(None, title="history", lines=lines))
    assert_within_limits(rendered)
    assert len(rendered["blocks"]) == 50
    last = rendered["blocks"][-1]
    assert last["type"] == "context"
    shown = sum(b["text"]["text"].count("\n") + 1 for b in rendered["blocks"][1:-1])
    cut = int(re.search(r"… (\d+) more lines", last["elements"][0]["text"]).group(1))  # type: ignore[union-attr]
    assert shown + cut == len(lines)


def test_huge_request_id_is_refused_rather_than_cut() -> None:
    with pytest.raises(ValueError):
        blocks.request_root(request(id="R" * 2001), CHANGE, DIFF)


def test_results_have_no_buttons() -> None:
    for name in (
        "result_proposed_dry_run",
        "result_proposed_opened",
        "result_info_status",
        "error_unknown_env",
    ):
        assert action_ids(CASES[name]()) == []


# --------------------------------------------------------------------------------------------- properties

printable = st.text(st.characters(codec="utf-8"), max_size=400)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    app=printable,
    title=printable,
    old=printable,
    new=printable,
    requester=printable,
    status=printable,
    diff=st.lists(printable, max_size=60),
    detail=printable,
)
def test_any_text_renders_within_limits_and_escaped(
    app: str, title: str, old: str, new: str, requester: str, status: str, diff: list[str], detail: str
) -> None:
    field = FieldChange(app, "production", "replicas", old, new, "f")
    change = replace(CHANGE, title=title, fields=(field,), checks=(Check("schema", False, detail),))
    req = request(app=app, title=title, requester=requester, fields=[field.__dict__])
    unified = "--- a/f\n+++ b/f\n@@ -1 +1 @@\n" + "".join(f"+{line}\n" for line in diff)
    for rendered in (
        blocks.request_root(req, change, unified, status),
        blocks.deploy_channel_line(req, outcome="succeeded", approvers=[requester]),
        blocks.thread_reply("failed", env=app, reason=title, message=detail),
    ):
        assert_within_limits(rendered)
        assert_no_control_sequences(all_text(rendered))


def test_rebased_reply_says_whether_approvals_stand_and_shows_old_and_new() -> None:
    old = [["frontend", "production", "image frontend", "ghcr.io/acme/frontend:1.4.2", "ghcr.io/acme/frontend:1.5.0"]]
    new = [["frontend", "production", "image frontend", "ghcr.io/acme/frontend:1.6.0", "ghcr.io/acme/frontend:1.5.0"]]
    same = blocks.thread_reply("rebased", base="main", after="#41 merged", sha="a" * 40, same=True, old=old, new=old)
    assert same["text"] == (
        "🔁 Rebased on main after #41 merged; the change is the same (frontend image frontend "
        "ghcr.io/acme/frontend:1.4.2 → ghcr.io/acme/frontend:1.5.0), so approvals stand."
    )
    changed = blocks.thread_reply("rebased", base="main", after="#41 merged", sha="b" * 40, same=False, old=old,
                                  new=new)
    assert changed["text"] == (
        "🔁 Rebased on main after #41 merged; the change is now frontend image frontend "
        "ghcr.io/acme/frontend:1.6.0 → ghcr.io/acme/frontend:1.5.0 (was frontend image frontend "
        "ghcr.io/acme/frontend:1.4.2 → ghcr.io/acme/frontend:1.5.0), so approval is needed again."
    )


def test_pushed_reply_names_the_pusher_and_the_commit() -> None:
    assert blocks.thread_reply("pushed", by="U0DAVE", sha="c" * 40, needed=1)["text"] == (
        "⚠️ <@U0DAVE> pushed ccccccc to the PR branch; approvals are cleared and approval is needed again "
        "before it can merge."
    )


def test_updated_reply_says_whether_approvals_stand() -> None:
    old = [["frontend", "production", "replicas", "3", "5"]]
    new = [["frontend", "production", "replicas", "4", "5"]]
    assert blocks.thread_reply("updated", same=False, old=old, new=new)["text"] == (
        "✏️ Updated the PR to what was just asked again; the change is now frontend replicas 4 → 5 "
        "(was frontend replicas 3 → 5), so approval is needed again."
    )
