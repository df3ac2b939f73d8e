"""The life of a request: propose, approve, merge, close, supersede — on any forge, any store.

Chat buttons, CLI commands and forge webhooks all land here, so a double click, a Slack retry and a
GitHub redelivery meet the same compare-and-set transitions and become no-ops, never a second PR.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from opsbot.core.model import (
    Actor,
    Approval,
    Change,
    Intent,
    PullRequest,
    Request,
    RequestState,
    effect_of,
    utcnow,
)
from opsbot.core.ports import Forge, NewRequest, OpenRequestExists, Store
from opsbot.errors import CommandError, HeadChanged, MergeConflict, PermanentError, TemporaryError
from opsbot.forge import naming
from opsbot.manifests.planner import NothingToDo, Planner, unified_diff

log = logging.getLogger(__name__)

#: An open request with no PR this old has lost its opener (a crash between insert and PR).
STALE_OPENING_SECONDS = 120.0

#: Called after every transition (request, event, facts): the app queues chat posts from it.
Notify = Callable[[Request, str, dict[str, Any]], None]

def _edits(fields: Any) -> set[tuple[str, ...]]:
    """What a PR's diff does, file by file: two changes with equal edits show the same diff."""
    out: set[tuple[str, ...]] = set()
    for f in fields:
        get = f.get if isinstance(f, dict) else (lambda k, d=None, f=f: getattr(f, k, d))
        out.add(tuple(str(get(k, "") if get(k, "") is not None else "") for k in ("file", "app", "env", "field",
                                                                               "old", "new")))
    return out


@dataclass(frozen=True)
class Moved:
    """What approve/merge/cancel did: the request after it, the answer, and the events it published
    for this request (empty when nothing moved, e.g. a second click), so callers need no side channel."""

    request: Request
    message: str
    events: tuple[str, ...] = ()


@dataclass(frozen=True)
class Proposal:
    request: Request
    pr: PullRequest
    existing: bool


class RequestLifecycle:
    """The only writer of request state: every transition is audited and published as one event."""

    def __init__(
        self,
        store: Store,
        forge: Forge,
        notify: Notify | None = None,
        parse: Callable[[str], Intent] | None = None,
        users: Mapping[str, str] | None = None,
        *,
        planner_for: Callable[[str], Planner] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        pr_wait_seconds: float = 30.0,
    ) -> None:
        self.store = store
        #: a planner on a ref: re-planning open requests when their base moves
        self.planner_for = planner_for
        #: waiting for another replica to record the PR of an intent it claimed first
        self.clock = clock
        self.sleep = sleep
        self.pr_wait_seconds = pr_wait_seconds
        self.forge = forge
        self.notify = notify or (lambda r, e, f: None)
        #: turns a stored command back into its intent, for re-planning on a moved base
        self.parse = parse
        #: chat user id -> GitHub login (settings `users`): one person has one identity per place,
        #: and four-eyes must see through that, or a requester could approve on GitHub.
        self.users = dict(users or {})
        self._logins = {login.lower(): user for user, login in self.users.items()}

    def same_person(self, requester: str, other: str) -> bool:
        """Whether `other` (a chat id, a CLI name or a GitHub login) is the requester under another name."""
        if not requester or not other:
            return False
        if other == requester:
            return True
        mine = {requester.lower(), self.users.get(requester, "").lower()} - {""}
        owner = self._logins.get(requester.lower())
        if owner:
            mine.add(owner.lower())
        theirs = {other.lower(), self.users.get(other, "").lower()} - {""}
        owner = self._logins.get(other.lower())
        if owner:
            theirs.add(owner.lower())
        # Logins compare case-insensitively (GitHub's rule); chat ids are upper case by construction.
        return bool(mine & theirs)

    # ------------------------------------------------------------------------------ propose
    def propose(
        self,
        change: Change,
        command: str,
        actor: Actor,
        approvals_needed: int,
        channel: str = "",
        thread_ts: str = "",
    ) -> Proposal:
        """One open request per intent, whichever replica asks: the store's unique index decides.

        The replica whose insert wins opens (or finds) the PR; any other waits for that PR to be
        recorded and answers with it, so a Slack retry landing elsewhere never makes a second request.
        """
        key = change.intent.key()
        branch = naming.branch_for(change)
        new = NewRequest(
            intent_key=key,
            command=command,
            verb=change.intent.verb,
            app=change.app,
            env=change.env,
            requester=actor.id,
            forge=self.forge.name,
            branch=branch,
            base_branch=change.base_branch,
            base_sha=change.base_sha,
            title=change.title,
            summary=change.title,
            fields=[f.__dict__ for f in change.fields],
            approvals_needed=approvals_needed,
            channel=channel,
            thread_ts=thread_ts,
        )
        for _attempt in range(3):
            try:
                request = self.store.create_request(new)
            except OpenRequestExists as taken:
                proposal = self._open_proposal(taken.existing, change)
                if proposal is not None:
                    return proposal
                continue  # the open one turned out merged/closed on the forge: ask the store again
            return self._open_pr_for(request, change, actor)
        raise CommandError(f"The request for this change kept changing under me; try `{command}` again.")

    def _open_pr_for(self, request: Request, change: Change, actor: Actor) -> Proposal:
        branch = request.branch
        # A PR on this branch that no request records: a process died between opening and recording
        # it. Adopt it rather than open a second one.
        found = self.forge.find_open_pr(branch)
        diff = unified_diff(list(change.edits))
        try:
            pr = found or self.forge.open_pr(
                change,
                branch,
                naming.commit_message(change, request),
                naming.pr_body(change, diff, request, requester_login=self.users.get(actor.id, "")),
                naming.labels_for(change),
            )
        except (PermanentError, TemporaryError, CommandError) as exc:
            self.store.transition(request.id, RequestState.CLOSED, "opsbot", f"PR could not be opened: {exc}")
            raise CommandError(f"The PR could not be opened: {exc}") from None
        request = self.store.update_request(request.id, pr_number=pr.number, pr_url=pr.url, head_sha=pr.head_sha)
        self._supersede_others(request)
        return Proposal(request, pr, found is not None or not pr.created)

    def _open_proposal(self, existing: Request, change: Change | None = None) -> Proposal | None:
        """The answer for an intent someone already asked for; None when that request just ended.

        "Already open" must mean the same change: when `change` (what was just planned and shown)
        differs from what the PR holds, the PR is updated to it first.
        """
        current = self._await_pr(existing)
        if current is not None and current.state == RequestState.SUPERSEDED and current.pr_number is not None:
            # this ask duplicated one that was open when it came in; a newer, different ask replaced
            # that one since. The answer is that request, as it is: a newer ask must not be undone.
            return Proposal(current, self.forge.get_pr(current.pr_number), True)
        if current is None or not current.state.is_open:
            return None
        if current.pr_number is None:
            raise CommandError(
                f"{current.id} asks for the same change and its PR is still being opened; "
                "try again in a minute."
            )
        pr = self.forge.get_pr(current.pr_number)
        if pr.state == "open":
            if change is not None and _edits(current.fields) != _edits(change.fields):
                current = self.replace_change(current, change, "updated", "the same ask again")
                pr = self.forge.get_pr(pr.number)
            return Proposal(current, pr, True)
        # The forge knows more than we do (its webhook is not processed yet): catch up, then retry.
        if pr.state == "merged":
            self.forge_merged(pr.number, pr.merge_sha, "github" if self.forge.name == "github" else "forge")
        else:
            self.forge_closed(pr.number, "forge")
        return None

    def _await_pr(self, existing: Request) -> Request | None:
        """Wait (bounded) until the request's owner records its PR; adopt a PR it opened but never
        recorded; close it when its owner is long gone without opening one (crash repair)."""
        deadline = self.clock() + self.pr_wait_seconds
        delay = 0.05
        current: Request | None = existing
        while current is not None and current.state.is_open and current.pr_number is None:
            repaired = self._repair(current)
            if repaired is not current:
                return repaired
            if self.clock() >= deadline:
                break
            self.sleep(delay)
            delay = min(delay * 2, 1.0)
            current = self.store.get_request(existing.id)
        return current

    def _repair(self, req: Request) -> Request | None:
        """An open request without a PR: record the PR its branch has (the process died between
        opening and recording it), or close it if it is older than any live opener could be.
        Returns `req` itself when it may still be in the hands of a live replica."""
        found = self.forge.find_open_pr(req.branch) if req.branch else None
        if found is not None:
            log.info("recording PR #%s of %s, opened before a restart", found.number, req.id)
            return self.store.update_request(req.id, pr_number=found.number, pr_url=found.url, head_sha=found.head_sha)
        age = (utcnow() - req.created_at).total_seconds()
        if age < max(self.pr_wait_seconds, STALE_OPENING_SECONDS):
            return req
        reason = "its PR was never opened (opsbot stopped before); ask again"
        closed = self.store.transition(req.id, RequestState.CLOSED, "opsbot", reason)
        if closed is not None:
            self.notify(closed, "closed", {"by": "opsbot", "reason": reason})
        return closed

    def repair(self) -> list[Request]:
        """At start: every open request without a recorded PR is recorded or closed (never orphaned)."""
        fixed: list[Request] = []
        for req in self.store.list_requests(states=[RequestState.PROPOSED, RequestState.APPROVED], limit=500):
            if req.pr_number is not None:
                continue
            try:
                after = self._repair(req)
            except Exception:
                log.exception("repairing %s failed", req.id)
                continue
            if after is not None and after is not req:
                fixed.append(after)
        return fixed

    def _supersede_others(self, request: Request) -> None:
        """An older open request for the same app, env and verb is replaced by this one."""
        for other in self.store.list_requests(
            states=[RequestState.PROPOSED, RequestState.APPROVED], app=request.app, env=request.env, limit=20
        ):
            if other.id == request.id or other.verb != request.verb or other.intent_key == request.intent_key:
                continue
            moved = self.store.transition(
                other.id, RequestState.SUPERSEDED, "opsbot", f"superseded by {request.id}"
            )
            if moved:
                if other.pr_number:
                    try:
                        self.forge.close_pr(other.pr_number, f"Superseded by opsbot request {request.id}.")
                    except Exception as exc:
                        log.warning(
                            "closing superseded PR #%s failed: %s", other.pr_number, type(exc).__name__
                        )
                self.notify(moved, "superseded", {"by": request.id, "pr": request.pr_number})

    # ------------------------------------------------------------------------------ threads
    def claim_thread(self, request_id: str, owner: str) -> bool:
        """Whether `owner` may post this request's thread root: true once per request, across replicas."""
        return self.store.claim_thread(request_id, owner)

    def release_thread(self, request_id: str, owner: str) -> Request:
        """The root could not be posted: no thread for now, and the next ask may try again."""
        self.store.release_thread(request_id, owner)
        return self.store.update_request(request_id, channel="", thread_ts="")

    def attach_thread(self, request_id: str, channel: str, thread_ts: str) -> Request:
        """Record where the request's thread lives ("" for both: it has none, replies are skipped)."""
        return self.store.update_request(request_id, channel=channel, thread_ts=thread_ts)

    # ------------------------------------------------------------------------------ lookups
    def get(self, ref: str) -> Request:
        req = self.store.get_request(ref)
        if req is None and ref.lstrip("#").isdigit():
            req = self.store.find_request_by_pr(self.forge.name, int(ref.lstrip("#")))
        if req is None:
            raise CommandError(f'No request "{ref}". `status` lists the open ones.')
        return req

    # ------------------------------------------------------------------------------ approvals bind
    # The rule (DESIGN §2): an approval counts while the PR's head is the commit it was given on and
    # the request's effect (rendered field changes, old -> new) is the effect it was given for.
    # A commit by anyone else clears approvals; opsbot's own rebase keeps them only when the effect
    # is identical. Merge sends the approved head to the forge, which merges that commit or nothing.

    def valid_approvals(self, req: Request) -> list[Approval]:
        """The approvals that still count for the request as it is now."""
        effect = req.effect
        return [
            a
            for a in self.store.approvals(req.id)
            if (a.head_sha or req.head_sha) == req.head_sha and (not a.effect or a.effect == effect)
        ]

    def clear_approvals(self, req: Request, actor: str, why: str) -> Request:
        """Forget every approval; an approved request needs approval again (back to proposed)."""
        self.store.clear_approvals(req.id)
        if req.state == RequestState.APPROVED:
            req = self.store.transition(req.id, RequestState.PROPOSED, actor, why) or req
        return req

    def branch_pushed(self, req: Request, head_sha: str, pusher: str) -> Request:
        """A commit opsbot did not make is on the PR branch: what was approved is not what would merge."""
        current = self.store.get_request(req.id) or req
        if not head_sha or head_sha == current.head_sha or not current.state.is_open:
            return current
        who = pusher or "someone"
        current = self.store.update_request(current.id, head_sha=head_sha)
        current = self.clear_approvals(current, who, f"{who} pushed {head_sha[:7]}; approvals cleared")
        self.notify(current, "pushed", {"by": who, "sha": head_sha, "needed": current.approvals_needed})
        return current

    def _head_moved(self, req: Request) -> Request | None:
        """The request after a push nobody told us about (no webhook: the local forge), else None."""
        if req.pr_number is None:
            return None
        pr = self.forge.get_pr(req.pr_number)
        if pr.state != "open" or not pr.head_sha or pr.head_sha == req.head_sha:
            return None
        return self.branch_pushed(req, pr.head_sha, pr.head_author)

    # ------------------------------------------------------------------------------ approve
    def approve(self, req: Request, actor: Actor, source: str = "chat") -> Moved:
        if not req.state.is_open:
            raise CommandError(f"Request {req.id} is {req.state}; there is nothing to approve.")
        if self.same_person(req.requester, actor.id):
            raise CommandError(
                f"You asked for {req.id}, so your approval does not count (four-eyes). Ask a teammate."
            )
        moved = self._head_moved(req)
        if moved is not None:
            raise CommandError(
                f"PR #{req.pr_number} changed since it was shown: {moved.head_sha[:7]} was pushed to its branch. "
                "Read the PR again, then approve."
            )
        added = self.store.add_approval(req.id, actor.id, source, head_sha=req.head_sha, effect=req.effect)
        count = len(self.valid_approvals(req))
        if not added:
            return Moved(req, f"You already approved {req.id} ({count}/{max(req.approvals_needed, 1)}).")
        if source == "chat" and req.pr_number:
            try:
                self.forge.comment(
                    req.pr_number,
                    f"Approved in chat by {actor.display} ({count}/{req.approvals_needed}) "
                    f"at {req.head_sha[:7]}.",
                )
            except Exception as exc:
                log.warning("PR comment failed: %s", type(exc).__name__)
        if count >= req.approvals_needed:
            moved = self.store.transition(req.id, RequestState.APPROVED, actor.id, f"approved by {actor.id}")
            if moved:
                req = moved
        # the head is part of the facts: approving again after a push is a new event, not a repeat
        self.notify(req, "approved", {"by": actor.id, "count": count, "needed": req.approvals_needed,
                                      "head": req.head_sha})
        return Moved(req, f"Approved by <@{actor.id}> ({count}/{req.approvals_needed}).", ("approved",))

    # ------------------------------------------------------------------------------ merge
    def merge(
        self, req: Request, actor: Actor, planner_for: Callable[[str], Planner] | None = None
    ) -> Moved:
        """Merge exactly the approved head, or refuse and say why; never re-plan on the way."""
        if req.state == RequestState.MERGED or req.state == RequestState.DEPLOYED:
            return Moved(req, f"{req.id} is already merged ({req.merge_sha[:7]}).")
        if not req.state.is_open:
            raise CommandError(f"Request {req.id} is {req.state}; it cannot be merged.")
        if req.pr_number is None:
            raise CommandError(f"{req.id} has no PR.")
        moved = self._head_moved(req)
        if moved is not None:
            raise CommandError(self._changed_text(moved))
        count = len(self.valid_approvals(req))
        if count < req.approvals_needed:
            raise CommandError(
                f"{req.id} needs {req.approvals_needed} approval(s) before it can merge and has {count}. "
                "The requester's own approval never counts."
            )
        message = f"{req.title} (opsbot {req.id}, PR #{req.pr_number})"
        try:
            pr = self.forge.merge_pr(req.pr_number, message, expected_head=req.head_sha)
        except HeadChanged as exc:
            head = exc.head_sha or self.forge.get_pr(req.pr_number).head_sha
            raise CommandError(self._changed_text(self.branch_pushed(req, head, ""))) from None
        except MergeConflict as exc:
            # never merged textually, never re-planned silently: re-plan in the open, then ask again
            self.follow_base(req.base_branch, "a conflict at merge")
            raise CommandError(
                f"{req.id} was not merged: {exc.message}",
                hint=f"opsbot re-planned it on the current {req.base_branch} (see the thread); merge again, "
                "after a new approval if its effect changed.",
            ) from None
        moved = self.store.transition(
            req.id, RequestState.MERGED, actor.id, f"merged as {pr.merge_sha[:7]}", merge_sha=pr.merge_sha
        )
        if moved is None:
            current = self.store.get_request(req.id)
            return Moved(current or req, f"{req.id} is already merged.")
        self.notify(moved, "merged", {"by": actor.id, "sha": pr.merge_sha})
        self.follow_base(moved.base_branch, f"#{moved.pr_number} merged")
        return Moved(moved, f"Merged by <@{actor.id}> as {pr.merge_sha[:7]}.", ("merged",))

    @staticmethod
    def _changed_text(req: Request) -> str:
        return (
            f"{req.id} was not merged: PR #{req.pr_number} changed after it was approved "
            f"({req.head_sha[:7]} was pushed to its branch). It needs approval again."
        )

    # ------------------------------------------------------------------------------ deployed / failed
    def settle(
        self,
        request_id: str,
        target: RequestState,
        actor: str,
        detail: str,
        at: datetime | None = None,
        since_merge: float | None = None,
    ) -> Request | None:
        """The agent's verdict on a merged request: deployed or failed (compare-and-set; None when it
        had already moved). The deploy correlator words and queues the posts for it itself, so the
        event published here carries `posted: True` and is for observers (metrics, the console)."""
        if target not in (RequestState.DEPLOYED, RequestState.FAILED):
            raise ValueError(f"settle moves to deployed or failed, not {target}")
        fields = {"deployed_at": at} if target is RequestState.DEPLOYED and at is not None else {}
        moved = self.store.transition(request_id, target, actor, detail, **fields)
        if moved is not None:
            facts: dict[str, Any] = {"by": actor, "detail": detail, "posted": True}
            if target is RequestState.DEPLOYED and since_merge is not None:
                facts["since_merge"] = since_merge
            self.notify(moved, str(target), facts)
        return moved

    # ------------------------------------------------------------------------------ open PRs follow their base
    def follow_bases(self) -> list[Request]:
        """Every base branch of an open request, followed (a push webhook, the periodic check)."""
        bases = {
            r.base_branch
            for r in self.store.list_requests(states=[RequestState.PROPOSED, RequestState.APPROVED], limit=500)
            if r.base_branch and r.pr_number is not None
        }
        rebased: list[Request] = []
        for base in sorted(bases):
            rebased += self.follow_base(base, "")
        return rebased

    def _moved_by(self, base_branch: str, sha: str) -> str:
        """How a thread names a base move: the PR whose merge it was, else the new commit."""
        for r in self.store.list_requests(states=[RequestState.MERGED, RequestState.DEPLOYED, RequestState.FAILED],
                                          limit=50):
            if r.merge_sha == sha and r.pr_number is not None:
                return f"#{r.pr_number} merged"
        return f"{base_branch} moved to {sha[:7]}"

    def follow_base(self, base_branch: str, after: str) -> list[Request]:
        """The base moved: re-plan every open request on it whose PR is not on the new base commit.

        Errors are logged per request and never undo what moved the base (a merge already happened).
        """
        if self.planner_for is None or self.parse is None or not base_branch:
            return []
        waiting = [
            r
            for r in self.store.list_requests(states=[RequestState.PROPOSED, RequestState.APPROVED], limit=500)
            if r.base_branch == base_branch and r.pr_number is not None
        ]
        if not waiting:
            return []  # nothing to follow: no fetch, no planning
        try:
            self.forge.refresh()
            planner = self.planner_for(base_branch)
        except Exception as exc:
            log.warning("cannot re-plan open requests on %s: %s", base_branch, type(exc).__name__)
            return []
        head = planner.index.snap.sha
        rebased: list[Request] = []
        for req in waiting:
            if req.base_sha == head:
                continue
            after = after or self._moved_by(base_branch, head)
            try:
                rebased.append(self.rebase(req, planner, after))
            except Exception:
                log.exception("re-planning %s on %s failed", req.id, base_branch)
        return rebased

    def rebase(self, req: Request, planner: Planner, after: str) -> Request:
        """Re-plan one request on `planner`'s base and force its branch there (opsbot's own commit).

        Same effect -> the approvals stand (re-bound to the new head); another effect -> cleared, and
        the thread says old -> new; nothing left to do -> the request is closed with that reason.
        """
        assert self.parse is not None and req.pr_number is not None
        intent = self.parse(req.command)
        try:
            change = planner.plan(intent)
        except NothingToDo as exc:
            reason = exc.message
            self.forge.close_pr(req.pr_number, f"Closed by opsbot: {reason}")
            moved = self.store.transition(req.id, RequestState.CLOSED, "opsbot", f"no longer applies: {reason}")
            if moved is not None:
                self.notify(moved, "closed", {"by": "opsbot", "reason": reason})
            return moved or req
        return self.replace_change(req, change, "rebased", after)

    def replace_change(self, req: Request, change: Change, event: str, after: str) -> Request:
        """Put `change` on the request's PR branch (opsbot's own commit), then apply the rule: the
        approvals stand only if the effect is identical; the thread is told either way (`event`)."""
        assert req.pr_number is not None
        old_effect, new_effect = req.effect, effect_of(change.fields)
        pr = self.forge.update_pr(
            req.pr_number,
            change,
            naming.commit_message(change, req) + f"\nRe-planned on {change.base_sha[:7]} after {after}.\n",
        )
        current = self.store.update_request(
            req.id,
            base_sha=change.base_sha,
            head_sha=pr.head_sha,
            fields=[f.__dict__ for f in change.fields],
            title=change.title,
        )
        same = old_effect == new_effect
        if same:
            self.store.rebind_approvals(req.id, pr.head_sha, new_effect)
        else:
            current = self.clear_approvals(current, "opsbot", f"re-planned after {after}: the effect changed")
        facts = {
            "base": req.base_branch,
            "after": after,
            "sha": pr.head_sha,
            "same": same,
            "old": [list(e) for e in old_effect],
            "new": [list(e) for e in new_effect],
        }
        self.notify(current, event, facts)
        return current

    # ------------------------------------------------------------------------------ close
    def cancel(self, req: Request, actor: Actor) -> Moved:
        if not req.state.is_open:
            raise CommandError(f"Request {req.id} is {req.state}; there is nothing to cancel.")
        if req.pr_number:
            self.forge.close_pr(req.pr_number, f"Cancelled by {actor.display} in chat.")
        moved = self.store.transition(req.id, RequestState.CLOSED, actor.id, f"cancelled by {actor.id}")
        if moved is None:
            return Moved(req, f"{req.id} was already closed.")
        self.notify(moved, "closed", {"by": actor.id})
        return Moved(moved, f"Cancelled by <@{actor.id}>; PR #{req.pr_number} closed.", ("closed",))

    # ------------------------------------------------------------------------------ forge events
    def forge_merged(self, pr_number: int, merge_sha: str, merged_by: str, *, follow: bool = True) -> Request | None:
        """Merged on the forge (by hand, or our own merge seen again); `follow=False` when the caller
        re-plans the open PRs on the moved base itself (the webhook does it in the background)."""
        req = self.store.find_request_by_pr(self.forge.name, pr_number)
        if req is None:
            return None
        moved = self.store.transition(
            req.id,
            RequestState.MERGED,
            merged_by,
            f"merged on the forge as {merge_sha[:7]}",
            merge_sha=merge_sha,
        )
        if moved:
            self.notify(moved, "merged", {"by": merged_by, "sha": merge_sha})
            if follow:
                self.follow_base(moved.base_branch, f"#{pr_number} merged")
        return moved

    def forge_closed(self, pr_number: int, closed_by: str) -> Request | None:
        req = self.store.find_request_by_pr(self.forge.name, pr_number)
        if req is None:
            return None
        moved = self.store.transition(req.id, RequestState.CLOSED, closed_by, "closed on the forge")
        if moved:
            self.notify(moved, "closed", {"by": closed_by})
        return moved

    def forge_pushed(self, pr_number: int, head_sha: str, pusher: str) -> Request | None:
        """GitHub `synchronize`: a head we did not record (ours is recorded before GitHub tells us)."""
        req = self.store.find_request_by_pr(self.forge.name, pr_number)
        if req is None or not req.state.is_open or head_sha == req.head_sha:
            return None
        return self.branch_pushed(req, head_sha, pusher)

    def forge_approved(self, pr_number: int, reviewer: str, commit_sha: str = "") -> Request | None:
        """A GitHub review approval counts for the commit it was given on (`commit_id`), nothing else."""
        req = self.store.find_request_by_pr(self.forge.name, pr_number)
        if req is None or not req.state.is_open or self.same_person(req.requester, reviewer):
            return None
        if commit_sha and commit_sha != req.head_sha:
            log.info("review of PR #%s by %s is for %s, not the head %s: not counted",
                     pr_number, reviewer, commit_sha[:7], req.head_sha[:7])
            return None
        if not self.store.add_approval(req.id, reviewer, "github", head_sha=req.head_sha, effect=req.effect):
            return None
        count = len(self.valid_approvals(req))
        if count >= req.approvals_needed:
            req = (
                self.store.transition(
                    req.id, RequestState.APPROVED, reviewer, f"approved on the forge by {reviewer}"
                )
                or req
            )
        self.notify(req, "approved", {"by": reviewer, "count": count, "needed": req.approvals_needed,
                                      "head": req.head_sha})
        return req


#: The former name, kept for code written against it.
Requests = RequestLifecycle
