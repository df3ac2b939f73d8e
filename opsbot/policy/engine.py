"""`Policies`: the one service the request lifecycle calls for windows, freezes, locks, gates,
audit and automatic reverts.

The lifecycle hooks in at three points, each one call: `check_propose` before a PR is opened (locks),
`check_merge` before a merge (windows, freezes, gates; an override past them), and `after_propose` /
`on_failed` after the fact (commit statuses, auto-revert). Chat posts go through the `notify` hook
(thread replies) and `post_channel` (the deploy channel) that the composition root wires to the
outbox, so this module never talks to Slack, and time comes from an injected clock.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from opsbot.core.authz import GroupMembers, roles_of
from opsbot.core.model import Actor, Request, RequestState, utcnow
from opsbot.core.ports import Forge, Store
from opsbot.errors import CommandError, DeniedError
from opsbot.manifests.config import EnvConfig, RepoConfig
from opsbot.policy.model import AuditEntry, Block, Gate, GateResult, Lock, NewAudit
from opsbot.policy.rules import (
    describe_window,
    freeze_block,
    gates_for,
    next_opening,
    revert_command,
    when,
    window_block,
    window_interval,
)
from opsbot.settings import Settings

log = logging.getLogger(__name__)

POLICY_CONTEXT = "opsbot/policy"
GATE_CONTEXT = "opsbot/gate"
#: The role an override needs (docs/policies.md); `*` does not grant it: deny by default.
OVERRIDE_ROLE_VERB = "override"

Notify = Callable[[Request, str, dict[str, Any]], None]
#: (dedup key, env, text): one line in the env's deploy channel.
ChannelPost = Callable[[str, str, str], None]


class GateEvaluator(Protocol):
    def evaluate(self, gate: Gate, now: datetime) -> GateResult: ...


@dataclass(frozen=True)
class Clearance:
    """What `check_merge` allowed: notes to show, and an override to record once the merge happened."""

    notes: tuple[str, ...] = ()
    override_reason: str | None = None
    bypassed: str = ""


class MergeBlocked(CommandError):
    """A window, a freeze or a gate holds the merge back: the message says which, who, why, until when."""


class Locked(CommandError):
    """Someone else holds the app/env: the message says who, why, since when and where."""


class Policies:
    def __init__(
        self,
        store: Store,
        forge: Forge,
        settings: Settings,
        config: Callable[[], RepoConfig],
        *,
        clock: Callable[[], datetime] = utcnow,
        notify: Notify | None = None,
        post_channel: ChannelPost | None = None,
        gates: GateEvaluator | None = None,
        group_members: GroupMembers | None = None,
        open_revert: Callable[[str], Request] | None = None,
    ) -> None:
        self.store = store
        self.forge = forge
        self.settings = settings
        self.config = config
        self.clock = clock
        self.notify = notify or (lambda r, e, f: None)
        self.post_channel = post_channel
        self.gates = gates
        self.group_members = group_members
        #: Plans and proposes a command as opsbot itself (the revert PR); raises CommandError.
        self.open_revert = open_revert

    # ------------------------------------------------------------------ config
    def env(self, name: str) -> EnvConfig:
        cfg = self.config()
        env = cfg.envs.get(name)
        if env is None:
            import difflib

            near = difflib.get_close_matches(name, list(cfg.envs), n=1)
            hint = f' Did you mean "{near[0]}"?' if near else ""
            raise CommandError(f'Unknown environment "{name}".{hint} Environments: {", ".join(cfg.envs)}.')
        return env

    def _env_or_none(self, name: str) -> EnvConfig | None:
        try:
            return self.config().envs.get(name)
        except Exception as exc:  # a broken .opsbot.yaml must not hide freezes and locks
            log.warning("reading .opsbot.yaml for policies failed: %s", type(exc).__name__)
            return None

    # ------------------------------------------------------------------ merges
    def blocks(self, env: str, now: datetime | None = None) -> list[Block]:
        """What holds merges to `env` back at `now`: deny windows, no allow window, freezes."""
        now = now or self.clock()
        out: list[Block] = []
        cfg = self._env_or_none(env)
        if cfg is not None:
            found = window_block(cfg.windows, now)
            if found is not None:
                out.append(found)
        found = freeze_block(self.store.freezes_active(now, env), now)
        if found is not None:
            out.append(found)
        return out

    def describe(self, block: Block, env: str, now: datetime) -> str:
        if block.source == "freeze":
            because = f" because {block.reason}" if block.reason else ""
            return f"{env} is frozen by <@{block.who}>{because}, {when(block.until, now)}."
        because = f" ({block.reason})" if block.reason else ""
        if block.until is not None:
            until = when(block.until, now)
        elif block.what.startswith("deny"):
            until = "with no end in reach (each occurrence starts before the last one ends)"
        else:
            until = "with no allow window opening within a year"
        return f"Merges to {env} are blocked by the {block.what}{because}, set in .opsbot.yaml, {until}."

    def check_merge(self, req: Request, actor: Actor, override_reason: str | None = None) -> Clearance:
        """Raise MergeBlocked (or DeniedError for an override without the role); else what to tell
        with the merge. Called once, right before the forge merge; `merged` records the rest after."""
        now = self.clock()
        blocks = self.blocks(req.env, now)
        cfg = self._env_or_none(req.env)
        gates = gates_for(cfg.gates, req.verb) if cfg else []
        if override_reason is not None:
            return self._override(req, actor, override_reason, blocks, gates, now)
        if blocks:
            message = " ".join(self.describe(b, req.env, now) for b in blocks)
            self._audit(actor.id, "blocked", req, detail=message)
            raise MergeBlocked(
                f"{req.id} cannot merge now. {message}",
                hint="Proposals and approvals go on; someone with the `override` role may "
                f"`merge {req.id} override because <reason>`.",
            )
        if not gates or len(self.store.approvals(req.id)) < req.approvals_needed:
            # Not ready to merge anyway (the lifecycle says why): no query, no status, no thread post.
            return Clearance()
        results = self.evaluate_gates(req, gates, now)
        failing = [r for r in results if not r.passed]
        if failing:
            lines = "; ".join(f"{r.gate.name}: {r.outcome} ({r.detail})" for r in failing)
            raise MergeBlocked(f"{req.id} cannot merge: gate {lines}.")
        return Clearance(tuple(f"✅ gate {r.gate.name}: {r.detail}" for r in results))

    def merged(self, req: Request, actor: Actor, clearance: Clearance) -> list[str]:
        """After the merge went through: an override is audited and posted (never for a merge that
        then failed on the forge); the notes to add to the answer."""
        if clearance.override_reason is None:
            return list(clearance.notes)
        reason, detail = clearance.override_reason, clearance.bypassed
        self._audit(actor.id, "override", req, reason=reason, detail=detail)
        text = f"⚠️ <@{actor.id}> overrode policies to merge {req.id} in {req.env} because {reason}. Bypassed: {detail}"
        self.notify(req, "policy", {"text": text, "by": actor.id})
        self._channel(f"policy:override:{req.id}", req.env, text)
        return [text, *clearance.notes]

    def may_override(self, actor: Actor, env: str) -> bool:
        rbac = self.settings.rbac
        mine = roles_of(rbac, actor, self.group_members)
        return any(
            r.name in mine and OVERRIDE_ROLE_VERB in r.commands and ("*" in r.envs or env in r.envs)
            for r in rbac.roles
        )

    def _override(
        self, req: Request, actor: Actor, reason: str, blocks: list[Block], gates: list[Gate], now: datetime
    ) -> Clearance:
        if not self.may_override(actor, req.env):
            self._audit(actor.id, "blocked", req, reason=reason, detail="override refused: no override role")
            raise DeniedError(
                f"You may not override policies in {req.env}: that needs a role that lists `override` "
                f"in its commands for {req.env} (rbac.roles), and you have none. Nothing was merged."
            )
        bypassed = [self.describe(b, req.env, now) for b in blocks] + [f"gate {g.name}" for g in gates]
        return Clearance(override_reason=reason, bypassed=" ".join(bypassed) if bypassed else "nothing was blocking")

    # ------------------------------------------------------------------ gates
    def evaluate_gates(self, req: Request, gates: Iterable[Gate], now: datetime) -> list[GateResult]:
        results: list[GateResult] = []
        for gate in gates:
            if self.gates is None:
                result = GateResult(gate, "unknown", "PROMETHEUS_URL is not set, so the gate cannot be checked")
            else:
                try:
                    result = self.gates.evaluate(gate, now)
                except Exception as exc:  # an adapter bug must block, not pass
                    log.warning("gate %s failed to evaluate: %s", gate.name, type(exc).__name__)
                    result = GateResult(gate, "unknown", f"evaluating the gate failed ({type(exc).__name__})")
            results.append(result)
            self._audit("opsbot", "gate", req, reason=gate.name, detail=f"{result.outcome}: {result.detail}")
        if not results:
            return results
        if all(r.passed for r in results):
            state, summary = "success", f"{len(results)} gate(s) passed"
        elif any(r.outcome == "unknown" for r in results):
            state, summary = "error", "; ".join(f"{r.gate.name}: {r.outcome}" for r in results if not r.passed)
        else:
            state, summary = "failure", "; ".join(f"{r.gate.name}: {r.outcome}" for r in results if not r.passed)
        self._status(req, GATE_CONTEXT, state, summary)
        lines = [f"{'✅' if r.passed else '❌' if r.outcome == 'fail' else '❔'} gate {r.gate.name}: "
                 f"{r.outcome} — {r.detail}" for r in results]  # fmt: skip
        self.notify(req, "policy", {"text": "\n".join(lines), "by": "opsbot", "at": now.isoformat()})
        return results

    # ------------------------------------------------------------------ commit statuses
    def status_of(self, env: str, now: datetime) -> tuple[str, str]:
        blocks = self.blocks(env, now)
        if not blocks:
            return "success", f"No window or freeze blocks merges to {env}"
        b = blocks[0]
        if b.source == "freeze":
            text = f"{env} frozen by {b.who}" + (f": {b.reason}" if b.reason else "")
        else:
            text = f"{b.what}" + (f": {b.reason}" if b.reason else "")
        return "failure", text[:140]

    def publish(self, req: Request, now: datetime | None = None, *, force: bool = False) -> bool:
        """Set `opsbot/policy` on the PR head; False when it already says the same (no call made)."""
        if not req.head_sha or req.pr_number is None or not req.state.is_open:
            return False
        state, description = self.status_of(req.env, now or self.clock())
        key = f"policy:status:{req.id}"
        value = f"{req.head_sha}:{state}:{description}"
        if not force and self.store.kv_get(key) == value:
            return False
        if self._status(req, POLICY_CONTEXT, state, description):
            self.store.kv_set(key, value)
            return True
        return False

    def _status(self, req: Request, context: str, state: str, description: str) -> bool:
        try:
            self.forge.set_status(req.head_sha, context, state, description[:140], req.pr_url)
            return True
        except Exception as exc:  # the PR and the merge check stand; the status catches up on tick
            log.warning("setting %s on %s failed: %s", context, req.id, exc)
            return False

    def governed(self, env: str, now: datetime | None = None) -> bool:
        """Whether anything can hold merges to `env` back: configured windows or gates, or a freeze
        in force. Only then does a new PR get `opsbot/policy` at once (a freeze that starts later
        reaches it through `tick`), so an env without policies pays no extra forge request."""
        cfg = self._env_or_none(env)
        if cfg is not None and (cfg.windows or cfg.gates):
            return True
        return bool(self.blocks(env, now))

    def after_propose(self, req: Request) -> None:
        if self.governed(req.env):
            self.publish(req)

    def open_requests(self, env: str) -> list[Request]:
        return self.store.list_requests(states=[RequestState.PROPOSED, RequestState.APPROVED], env=env, limit=500)

    def tick(self, now: datetime | None = None) -> int:
        """Re-publish statuses whose answer changed (a window opened or closed, a freeze ran out, a
        head moved). Called periodically by the server; the number of statuses set."""
        now = now or self.clock()
        changed = 0
        for req in self.store.list_requests(states=[RequestState.PROPOSED, RequestState.APPROVED], limit=1000):
            changed += self.publish(req, now)
        return changed

    def _announce(self, env: str, key: str, text: str, by: str) -> int:
        """Statuses of every open PR for `env`, one reply in each thread, one line in the deploy channel."""
        reqs = self.open_requests(env)
        for req in reqs:
            self.publish(req)
            self.notify(req, "policy", {"text": text, "by": by, "key": key})
        self._channel(key, env, text)
        return len(reqs)

    # ------------------------------------------------------------------ freezes
    def freeze(self, env: str, actor: Actor, duration: timedelta | None, reason: str) -> str:
        self.env(env)
        now = self.clock()
        freeze = self.store.freeze_add(env, actor.id, reason, now, now + duration if duration else None)
        because = f" because {reason}" if reason else ""
        text = f"❄️ {env} is frozen by <@{actor.id}>{because}, {when(freeze.ends_at, now)}. Merges wait; proposals and approvals go on."
        n = self._announce(env, f"policy:freeze:{freeze.id}", text, actor.id)
        return text + (f" {n} open PR(s) now carry a failing {POLICY_CONTEXT} status." if n else "")

    def unfreeze(self, env: str, actor: Actor) -> str:
        self.env(env)
        now = self.clock()
        lifted = self.store.freeze_lift(env, actor.id, now)
        if not lifted:
            raise CommandError(f"{env} is not frozen. `policies {env}` shows what is in force.")
        text = f"☀️ {env} was unfrozen by <@{actor.id}>."
        still = self.blocks(env, now)
        if still:
            text += " Still in force: " + " ".join(self.describe(b, env, now) for b in still)
        self._announce(env, f"policy:unfreeze:{'-'.join(str(f.id) for f in lifted)}", text, actor.id)
        return text

    # ------------------------------------------------------------------ locks
    def check_propose(self, app: str, env: str, actor: Actor) -> None:
        lock = self.store.lock_get(app, env)
        if lock is None or lock.holder in (actor.id, actor.name):
            return
        raise Locked(self._locked_text(lock))

    def _locked_text(self, lock: Lock) -> str:
        because = f" because {lock.reason}" if lock.reason else ""
        where = f" Their PR: {lock.link}" if lock.link else ""
        return (
            f"{lock.app} in {lock.env} is locked by <@{lock.holder}>{because}, since "
            f"{lock.since:%Y-%m-%d %H:%M} UTC.{where} Ask them to `unlock {lock.app} in {lock.env}` when done."
        )

    def lock(self, app: str, env: str, actor: Actor, reason: str) -> str:
        self.env(env)
        link = self._holder_link(app, env, actor.id)
        lock, took = self.store.lock_take(app, env, actor.id, reason, link, self.clock())
        if not took:
            if lock.holder == actor.id:
                return f"You already hold the lock of {app} in {env} (since {lock.since:%Y-%m-%d %H:%M} UTC)."
            raise Locked(self._locked_text(lock))
        because = f" because {reason}" if reason else ""
        return (
            f"🔒 {app} in {env} is locked by <@{actor.id}>{because}. Others' proposals there are refused "
            f"until `unlock {app} in {env}`; yours go ahead."
        )

    def _holder_link(self, app: str, env: str, holder: str) -> str:
        """The web link of the holder's open request there (its PR), so others know where to ask."""
        for req in self.store.list_requests(
            states=[RequestState.PROPOSED, RequestState.APPROVED, RequestState.MERGED], app=app, env=env, limit=20
        ):
            if req.requester == holder and req.pr_url.startswith(("http://", "https://")):
                return req.pr_url
        return ""

    def unlock(self, app: str, env: str, actor: Actor) -> str:
        self.env(env)
        held = self.store.lock_get(app, env)
        if held is not None and held.holder not in (actor.id, actor.name) and not self.may_override(actor, env):
            raise DeniedError(
                f"{app} in {env} is locked by <@{held.holder}>; only they, or someone with a role that lists "
                f"`override` for {env}, may unlock it."
            )
        released = self.store.lock_release(app, env, actor.id, self.clock())
        if released is None:
            raise CommandError(f"{app} in {env} is not locked.")
        whose = "" if released.holder == actor.id else f" (it was held by <@{released.holder}>)"
        return f"🔓 {app} in {env} is unlocked by <@{actor.id}>{whose}."

    # ------------------------------------------------------------------ listing
    def listing(self, env: str | None = None) -> list[str]:
        now = self.clock()
        cfg = self.config()
        names = [self.env(env).name] if env else list(cfg.envs)
        lines: list[str] = []
        for name in names:
            e = cfg.envs[name]
            for w in e.windows:
                interval = window_interval(w, now)
                if interval:
                    end = interval[1]
                    state = f"in force until {end:%Y-%m-%d %H:%M %Z}" if end else "in force, with no end in reach"
                else:
                    nxt = next_opening(w, now)
                    state = f"next from {nxt:%Y-%m-%d %H:%M %Z}" if nxt else "never within a year"
                reason = f" — {w.reason}" if w.reason else ""
                lines.append(f"{name} · {describe_window(w)}{reason} · {state} · source .opsbot.yaml")
            for g in e.gates:
                lines.append(f"{name} · gate {g.name} ({g.applies_to}): {g.query} · source .opsbot.yaml")
            if e.auto_revert:
                lines.append(f"{name} · auto_revert: a failed deploy opens its rollback PR · source .opsbot.yaml")
            for f in self.store.freezes_active(now, name):
                because = f" because {f.reason}" if f.reason else ""
                lines.append(f"{name} · freeze by <@{f.set_by}>{because}, {when(f.ends_at, now)} · source chat")
            for lk in self.store.locks_active(name):
                because = f" because {lk.reason}" if lk.reason else ""
                lines.append(
                    f"{name} · lock of {lk.app} by <@{lk.holder}>{because}, since {lk.since:%Y-%m-%d %H:%M} UTC · source chat"
                )
        return lines or [f"No windows, freezes, locks or gates in force{' in ' + env if env else ''}."]

    def audit(self, app: str | None, env: str | None, since: datetime | None, limit: int = 50) -> list[AuditEntry]:
        return self.store.audit_list(app=app, env=env, since=since, limit=limit)

    # ------------------------------------------------------------------ auto-revert
    def on_failed(self, req: Request) -> Request | None:
        """A request ended `failed`: in an env with `auto_revert`, open its rollback PR, once.

        The store claims the revert before anything is opened, so a redelivered or replayed failure
        opens nothing; a failed revert is not reverted again. The cluster is never touched: the
        revert is a PR that follows the env's approval rules like any other.
        """
        if req.state is not RequestState.FAILED:
            return None
        try:  # `auto_revert` is read from the base as it is now, with the failed merge in it
            self.forge.refresh()
        except Exception as exc:
            log.warning("refreshing the mirror before an auto-revert failed: %s", type(exc).__name__)
        cfg = self._env_or_none(req.env)
        if cfg is None or not cfg.auto_revert:
            return None
        if self.store.is_revert(req.id):
            if self.store.revert_claim(req.id):  # say it once
                text = (f"↩️ {req.id} was itself an automatic revert and it failed too; opsbot does not "
                        "revert a revert. Someone has to look at it.")  # fmt: skip
                self._audit("opsbot", "revert", req, detail="not reverted: it is an automatic revert")
                self.notify(req, "policy", {"text": text, "by": "opsbot", "key": f"revert:{req.id}"})
                self._channel(f"policy:revert:{req.id}", req.env, text)
            return None
        if not self.store.revert_claim(req.id):
            return None
        command = revert_command(req.verb, req.app, req.env, req.fields)
        failure = ""
        revert: Request | None = None
        if command is None:
            failure = f"opsbot cannot derive a safe rollback for a {req.verb} from what it changed"
        elif self.open_revert is None:
            failure = "automatic reverts are not wired in this process"
        else:
            try:
                revert = self.open_revert(command)
            except CommandError as exc:
                failure = f"`{command}` could not be proposed: {exc}"
            except Exception as exc:  # the failure is already told; the revert must not break intake
                log.exception("opening the revert of %s failed", req.id)
                failure = f"`{command}` could not be proposed ({type(exc).__name__})"
        if revert is None:
            text = f"↩️ {req.id} failed in {req.env} and auto_revert is on, but {failure}. Roll back by hand."
            self._audit("opsbot", "revert", req, detail=f"not opened: {failure}")
        else:
            self.store.revert_set(req.id, revert.id)
            link = f"PR #{revert.pr_number} {revert.pr_url}".strip()
            text = (f"↩️ {req.id} failed in {req.env}; opsbot opened the revert {revert.id} ({link}): `{command}`. "
                    f"It follows {req.env}'s approval rules: approve and merge it to roll back.")  # fmt: skip
            self._audit("opsbot", "revert", req, detail=f"opened {revert.id} ({link}): {command}")
        self.notify(req, "policy", {"text": text, "by": "opsbot", "key": f"revert:{req.id}"})
        self._channel(f"policy:revert:{req.id}", req.env, text)
        return revert

    # ------------------------------------------------------------------ helpers
    def _audit(self, actor: str, action: str, req: Request, *, reason: str = "", detail: str = "") -> None:
        self.store.audit_add(
            NewAudit(actor, action, req.id, req.pr_number, req.app, req.env, reason=reason, detail=detail)
        )

    def _channel(self, key: str, env: str, text: str) -> None:
        if self.post_channel is not None:
            try:
                self.post_channel(key, env, text)
            except Exception:
                log.exception("could not queue the deploy channel post %s", key)

