"""The life of a request: propose, approve, merge, close, supersede — on any forge, any store.

Chat buttons, CLI commands and forge webhooks all land here, so a double click, a Slack retry and a
GitHub redelivery meet the same compare-and-set transitions and become no-ops, never a second PR.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from opsbot.core.model import Actor, Change, Intent, PullRequest, Request, RequestState
from opsbot.core.ports import Forge, NewRequest, Store
from opsbot.errors import CommandError, PermanentError, TemporaryError
from opsbot.forge import naming
from opsbot.manifests.planner import Planner, unified_diff

log = logging.getLogger(__name__)

#: Called after every transition (request, event, facts): the app queues chat posts from it.
Notify = Callable[[Request, str, dict[str, Any]], None]

_key_locks: dict[str, threading.Lock] = {}
_key_locks_guard = threading.Lock()


def _lock_for(key: str) -> threading.Lock:
    with _key_locks_guard:
        return _key_locks.setdefault(key, threading.Lock())


@dataclass(frozen=True)
class Proposal:
    request: Request
    pr: PullRequest
    existing: bool


class Requests:
    def __init__(
        self,
        store: Store,
        forge: Forge,
        notify: Notify | None = None,
        parse: Callable[[str], Intent] | None = None,
        users: Mapping[str, str] | None = None,
    ) -> None:
        self.store = store
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
        key = change.intent.key()
        branch = naming.branch_for(change)
        with _lock_for(key):
            existing = self.store.find_open_request(key)
            if existing and existing.pr_number:
                pr = self.forge.get_pr(existing.pr_number)
                if pr.state == "open":
                    return Proposal(existing, pr, True)
            found = self.forge.find_open_pr(branch)
            if existing is None:
                existing = self.store.find_request_by_branch(branch) if found else None
            if found and existing and existing.state.is_open:
                return Proposal(existing, found, True)
            request = self.store.create_request(
                NewRequest(
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
            )
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
                self.store.transition(
                    request.id, RequestState.CLOSED, "opsbot", f"PR could not be opened: {exc}"
                )
                raise CommandError(f"The PR could not be opened: {exc}") from None
            request = self.store.update_request(
                request.id, pr_number=pr.number, pr_url=pr.url, head_sha=pr.head_sha
            )
            self._supersede_others(request)
            return Proposal(request, pr, not pr.created)

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

    # ------------------------------------------------------------------------------ lookups
    def get(self, ref: str) -> Request:
        req = self.store.get_request(ref)
        if req is None and ref.lstrip("#").isdigit():
            req = self.store.find_request_by_pr(self.forge.name, int(ref.lstrip("#")))
        if req is None:
            raise CommandError(f'No request "{ref}". `status` lists the open ones.')
        return req

    # ------------------------------------------------------------------------------ approve
    def approve(self, req: Request, actor: Actor, source: str = "chat") -> tuple[Request, str]:
        if not req.state.is_open:
            raise CommandError(f"Request {req.id} is {req.state}; there is nothing to approve.")
        if self.same_person(req.requester, actor.id):
            raise CommandError(
                f"You asked for {req.id}, so your approval does not count (four-eyes). Ask a teammate."
            )
        added = self.store.add_approval(req.id, actor.id, source)
        count = len(self.store.approvals(req.id))
        if not added:
            return req, f"You already approved {req.id} ({count}/{max(req.approvals_needed, 1)})."
        if source == "chat" and req.pr_number:
            try:
                self.forge.comment(
                    req.pr_number, f"Approved in chat by {actor.display} ({count}/{req.approvals_needed})."
                )
            except Exception as exc:
                log.warning("PR comment failed: %s", type(exc).__name__)
        if count >= req.approvals_needed:
            moved = self.store.transition(req.id, RequestState.APPROVED, actor.id, f"approved by {actor.id}")
            if moved:
                req = moved
        self.notify(req, "approved", {"by": actor.id, "count": count, "needed": req.approvals_needed})
        return req, f"Approved by <@{actor.id}> ({count}/{req.approvals_needed})."

    # ------------------------------------------------------------------------------ merge
    def merge(
        self, req: Request, actor: Actor, planner_for: Callable[[str], Planner] | None = None
    ) -> tuple[Request, str]:
        if req.state == RequestState.MERGED or req.state == RequestState.DEPLOYED:
            return req, f"{req.id} is already merged ({req.merge_sha[:7]})."
        if not req.state.is_open:
            raise CommandError(f"Request {req.id} is {req.state}; it cannot be merged.")
        count = len(self.store.approvals(req.id))
        if count < req.approvals_needed:
            raise CommandError(
                f"{req.id} needs {req.approvals_needed} approval(s) before it can merge and has {count}. "
                "The requester's own approval never counts."
            )
        if req.pr_number is None:
            raise CommandError(f"{req.id} has no PR.")
        message = f"{req.title} (opsbot {req.id}, PR #{req.pr_number})"
        try:
            pr = self.forge.merge_pr(req.pr_number, message)
        except CommandError as exc:
            if "conflict" not in str(exc).lower() or planner_for is None:
                raise
            pr = self._replan_and_merge(req, planner_for, message)
        moved = self.store.transition(
            req.id, RequestState.MERGED, actor.id, f"merged as {pr.merge_sha[:7]}", merge_sha=pr.merge_sha
        )
        if moved is None:
            current = self.store.get_request(req.id)
            return current or req, f"{req.id} is already merged."
        self.notify(moved, "merged", {"by": actor.id, "sha": pr.merge_sha})
        return moved, f"Merged by <@{actor.id}> as {pr.merge_sha[:7]}."

    def _replan_and_merge(
        self, req: Request, planner_for: Callable[[str], Planner], message: str
    ) -> PullRequest:
        """The base moved under the PR: re-apply the intent on the new base, never a textual merge."""
        assert req.pr_number is not None
        if self.parse is None:
            raise CommandError(
                f"PR #{req.pr_number} conflicts with {req.base_branch}; run the command again."
            )
        self.forge.refresh()
        planner = planner_for(req.base_branch)
        intent = self.parse(req.command)
        change = planner.plan(intent)
        pr = self.forge.update_pr(
            req.pr_number, change, f"{change.title}\n\nRe-planned on {change.base_sha[:7]}.\n"
        )
        self.store.update_request(req.id, base_sha=change.base_sha, head_sha=pr.head_sha)
        return self.forge.merge_pr(req.pr_number, message)

    # ------------------------------------------------------------------------------ close
    def cancel(self, req: Request, actor: Actor) -> tuple[Request, str]:
        if not req.state.is_open:
            raise CommandError(f"Request {req.id} is {req.state}; there is nothing to cancel.")
        if req.pr_number:
            self.forge.close_pr(req.pr_number, f"Cancelled by {actor.display} in chat.")
        moved = self.store.transition(req.id, RequestState.CLOSED, actor.id, f"cancelled by {actor.id}")
        if moved is None:
            return req, f"{req.id} was already closed."
        self.notify(moved, "closed", {"by": actor.id})
        return moved, f"Cancelled by <@{actor.id}>; PR #{req.pr_number} closed."

    # ------------------------------------------------------------------------------ forge events
    def forge_merged(self, pr_number: int, merge_sha: str, merged_by: str) -> Request | None:
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
        return moved

    def forge_closed(self, pr_number: int, closed_by: str) -> Request | None:
        req = self.store.find_request_by_pr(self.forge.name, pr_number)
        if req is None:
            return None
        moved = self.store.transition(req.id, RequestState.CLOSED, closed_by, "closed on the forge")
        if moved:
            self.notify(moved, "closed", {"by": closed_by})
        return moved

    def forge_approved(self, pr_number: int, reviewer: str) -> Request | None:
        req = self.store.find_request_by_pr(self.forge.name, pr_number)
        if req is None or not req.state.is_open or self.same_person(req.requester, reviewer):
            return None
        if not self.store.add_approval(req.id, reviewer, "github"):
            return None
        count = len(self.store.approvals(req.id))
        if count >= req.approvals_needed:
            req = (
                self.store.transition(
                    req.id, RequestState.APPROVED, reviewer, f"approved on the forge by {reviewer}"
                )
                or req
            )
        self.notify(req, "approved", {"by": reviewer, "count": count, "needed": req.approvals_needed})
        return req
