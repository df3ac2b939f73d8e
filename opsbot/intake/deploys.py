"""Deploy correlation: which requests an agent's event made live (or broke), told exactly once.

Why it is built this way (issue 5; DESIGN §2, §8, §9):

- **The inbox is the source of truth, the queue only a shortcut.** The webhook routes and the
  watchers store every accepted event (`Store.inbox_add`, unique per source and key) before they
  answer or move on; the in-memory `AgentIntake` queue only hands the stored event to the
  processor without a read. Whatever a crash drops from memory is still pending in the inbox and is
  processed by `DeployProcessor.replay_pending()` at the next start. An item is marked done last.
- **Idempotent at every step, so replaying is always safe.** A request moves with the store's
  compare-and-set `transition` (merged → deployed | failed, failed → deployed); the posts it causes
  are queued under keys made of the request and the state it reached (`deploy:R7:deployed:reply`),
  so a redelivered event, a repeated Flux event, the same fact seen by a webhook and by a watcher,
  or a replay after a crash can never queue a second post. Transition first, queue second; the
  window between the two is closed on replay, where a request already in the target state whose
  last transition names this event's key gets its posts queued (a no-op when they exist).
- **"Contains the merge commit", decided from Git.** A request is deployed when a success event
  for its env carries a revision equal to or descending from its merge commit
  (`git merge-base --is-ancestor`, cached: commits never change). An unknown revision makes the
  forge refresh its mirror once. One reconcile at the newest commit therefore deploys every
  request merged before it, and an event for an older revision deploys nothing.
- **Events that arrive before the merge is known are not lost.** The latest success or failure of
  each agent object is remembered (kv `deploy:latest:<env>:<object>`); when a request becomes
  merged, the processor checks it against them, so a Flux reconcile that beat the GitHub webhook
  still says "live".
- **Silence is reported too, once.** A request still merged `deploy_timeout_seconds` after its
  merge, with no event at all that contains its merge commit, gets one warning in its thread.

Env mapping (which agent object reconciles which env), in this order:

1. `.opsbot.yaml` `environments.<env>.agent: {kind: flux|argocd, name, namespace, cluster, object}`
   (`object`: Kustomization (default for flux), HelmRelease, Application). An env pinned this way
   takes events from that object only.
2. Flux, discovered: every Kustomization (`kustomize.toolkit.fluxcd.io`) in `clusters/<dir>/*.yaml`
   whose `spec.path` covers one of an env's paths (or lies inside one) reconciles that env; a
   Kustomization whose path matches no env reconciles env `<dir>` when `<dir>` is an env name and no
   other Kustomization of that directory matched it by path. When the same Kustomization name
   appears under several `clusters/<dir>`, `<dir>` is the cluster name events must carry
   (`Alert.spec.eventMetadata.cluster`) to tell them apart.
3. Argo CD, by name: an Application named like the env (`production`), or `<app>-<env>`
   (`frontend-production`, the longest env name wins), for envs that are not pinned.

Created clusters (`create cluster`, DESIGN §9) go live in two steps, each a reply in the thread:

1. The management cluster's agent applies `clusters/<name>/`. Which agent object does that is
   pinned in `.opsbot.yaml` as `clusters.agent: {kind, name, namespace, cluster}`; its events are
   correlated (merge commit ⊑ revision, exactly as for an env) with the create-cluster requests,
   whose env is empty. One object may reconcile an env and the clusters path at once.
2. The new Cluster API `Cluster` (`cluster.x-k8s.io`, watch mode on the management cluster)
   reports its Ready condition True: a reply "🟢 Cluster <name> is Ready", once per request (outbox
   key `cluster:<request>:ready:*`), and the request is deployed if step one was not heard. A Ready
   from before the merge is another cluster that had the name and is ignored; a Ready seen before
   the merge was known is remembered and rechecked.

Cluster names: a binding with a cluster only takes events that carry the same cluster, or none; an
event that matches bindings of more than one env is ambiguous and deploys nothing (logged once
with how to pin it). HelmRelease events carry a chart version, not a commit, unless the controller
sends `originRevision`; the Kustomization that applies the HelmRelease (with `wait: true`) is what
says "live" for a commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import re
import subprocess
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar

from opsbot.core.model import DeployEvent, Outcome, Request, RequestState, utcnow
from opsbot.core.ports import InboxItem, Store
from opsbot.errors import ConfigError, OpsbotError
from opsbot.intake.agents import AgentEvent, PayloadError
from opsbot.manifests.config import AgentRef, RepoConfig, load_config
from opsbot.manifests.gitrepo import GitRepo, Snapshot, norm
from opsbot.manifests.yamledit import load_all
from opsbot.metrics import DEFAULT as DEFAULT_METRICS
from opsbot.metrics import Metrics
from opsbot.notify import deploy_posts
from opsbot.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")

__all__ = [
    "SOURCES",
    "AgentIntake",
    "Ancestry",
    "Binding",
    "DeployProcessor",
    "EnvMap",
    "EnvMaps",
    "IntakeItem",
    "build_env_map",
    "event_from_record",
    "event_record",
    "inbox_key",
]

#: Inbox sources this module owns (the GitHub webhook owns "github").
SOURCES = frozenset({"flux", "argocd", "watch"})
RECORD_VERSION = 1
#: The env of create-cluster requests (they change no env), as the clusters binding names it.
CLUSTERS_ENV = ""
CREATE_CLUSTER = "create-cluster"
#: Kind of the Cluster API object whose Ready is step two of a created cluster going live.
CLUSTER_KIND = "Cluster"
#: A Ready condition this much older than the merge still counts (clock skew between the API
#: server and opsbot); older than that, it was some earlier cluster of the same name.
CLUSTER_READY_SKEW = timedelta(minutes=2)
_SHA1 = re.compile(r"\A[0-9a-f]{40}\Z")


# --------------------------------------------------------------------------------------------- records


def inbox_key(event: DeployEvent) -> str:
    """`DeployEvent.dedup_key()`, widened by the cluster when the event names one.

    Two clusters often run a Kustomization of the same name at the same revision (`flux-system/apps`
    in staging and production); without the cluster the second one would be taken for a
    redelivery of the first and never correlated.
    """
    base = event.dedup_key()
    if not event.cluster:
        return base
    return hashlib.sha256(f"{event.cluster}\0{base}".encode()).hexdigest()[:32]


def event_record(event: DeployEvent, received_at: datetime) -> dict[str, Any]:
    """What the inbox keeps: the parsed event (not the raw body), so a replay decides the same."""
    return {
        "v": RECORD_VERSION,
        "source": event.source,
        "kind": event.kind,
        "name": event.name,
        "namespace": event.namespace,
        "revision": event.revision,
        "raw_revision": getattr(event, "raw_revision", "") or event.revision,
        "outcome": str(event.outcome),
        "reason": event.reason,
        "message": event.message,
        "at": event.at.astimezone(UTC).isoformat(),
        "cluster": event.cluster,
        "received_at": received_at.astimezone(UTC).isoformat(),
    }


def event_from_record(record: Mapping[str, Any]) -> AgentEvent:
    """Read an inbox record back; `PayloadError` for a record this version cannot read."""
    try:
        if record.get("v") != RECORD_VERSION:
            raise PayloadError(f"inbox record version {record.get('v')!r} is not {RECORD_VERSION}")
        at = datetime.fromisoformat(str(record["at"]))
        return AgentEvent(
            source=str(record["source"]),
            kind=str(record["kind"]),
            name=str(record["name"]),
            namespace=str(record["namespace"]),
            revision=str(record["revision"]),
            outcome=Outcome(str(record["outcome"])),
            reason=str(record["reason"]),
            message=str(record["message"]),
            at=at if at.tzinfo else at.replace(tzinfo=UTC),
            cluster=str(record.get("cluster", "")),
            raw_revision=str(record.get("raw_revision", "")),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise PayloadError(f"unreadable inbox record: {type(exc).__name__}") from None


def agent_of(event: DeployEvent) -> str:
    """flux or argocd; a watched object says which by its kind."""
    if event.source in ("flux", "argocd"):
        return event.source
    return "argocd" if event.kind == "Application" else "flux"


# --------------------------------------------------------------------------------------------- env mapping


@dataclass(frozen=True)
class Binding:
    """One agent object that reconciles one env; empty namespace or cluster match any."""

    env: str
    agent: str  # flux | argocd
    kind: str  # Kustomization | HelmRelease | Application
    name: str
    namespace: str = ""
    cluster: str = ""
    rule: str = "config"  # config | flux-path | flux-dir | clusters

    def describe(self) -> str:
        where = f"{self.namespace}/" if self.namespace else ""
        on = f" on cluster {self.cluster}" if self.cluster else ""
        return f"{self.env or 'created clusters'}: {self.agent} {self.kind} {where}{self.name}{on} ({self.rule})"


@dataclass
class EnvMap:
    """Which env an agent event is about, by the rules in the module docstring."""

    envs: tuple[str, ...]
    bindings: tuple[Binding, ...]
    sha: str = ""
    notes: tuple[str, ...] = ()
    #: the agent object applying `clusters.path` on the management cluster (`clusters.agent`)
    clusters: Binding | None = None
    _by_name: dict[tuple[str, str, str], list[Binding]] = field(default_factory=dict, repr=False)
    _pinned: frozenset[str] = field(default=frozenset(), repr=False)
    _ambiguous_logged: set[tuple[str, ...]] = field(default_factory=set, repr=False)

    def __post_init__(self) -> None:
        for b in self.bindings:
            self._by_name.setdefault((b.agent, b.kind, b.name), []).append(b)
        self._pinned = frozenset(b.env for b in self.bindings if b.rule == "config")

    def resolve(self, event: DeployEvent) -> str | None:
        agent = agent_of(event)
        matches = [
            b
            for b in self._by_name.get((agent, event.kind, event.name), ())
            if (not b.namespace or b.namespace == event.namespace)
            and (not b.cluster or not event.cluster or b.cluster == event.cluster)
        ]
        if event.cluster and any(b.cluster == event.cluster for b in matches):
            matches = [b for b in matches if b.cluster == event.cluster]
        envs = sorted({b.env for b in matches})
        if len(envs) == 1:
            return envs[0]
        if len(envs) > 1:
            self._ambiguous(event, envs)
            return None
        if agent == "argocd" and event.kind == "Application":
            return self._by_app_name(event.name)
        return None

    def _by_app_name(self, name: str) -> str | None:
        free = [e for e in self.envs if e not in self._pinned]
        if name in free:
            return name
        suffixed = [e for e in free if name.endswith(f"-{e}") and len(name) > len(e) + 1]
        return max(suffixed, key=len) if suffixed else None

    def _ambiguous(self, event: DeployEvent, envs: list[str]) -> None:
        key = (event.kind, event.namespace, event.name, event.cluster)
        if key in self._ambiguous_logged:
            return
        self._ambiguous_logged.add(key)
        log.warning(
            "%s %s/%s%s matches envs %s; it deploys nothing until the Alert sets"
            " eventMetadata.cluster or .opsbot.yaml pins environments.<env>.agent",
            event.kind,
            event.namespace,
            event.name,
            f" on cluster {event.cluster}" if event.cluster else "",
            ", ".join(envs),
        )

    def applies_clusters(self, event: DeployEvent) -> bool:
        """Whether the event is about the object that applies created clusters (step one)."""
        b = self.clusters
        return (
            b is not None
            and agent_of(event) == b.agent
            and event.kind == b.kind
            and event.name == b.name
            and (not b.namespace or b.namespace == event.namespace)
            and (not b.cluster or not event.cluster or b.cluster == event.cluster)
        )

    def binding_for(self, env: str) -> Binding | None:
        """The object named in a warning ("check that Flux kustomization apps is reconciling")."""
        if env == CLUSTERS_ENV:
            return self.clusters
        return next((b for b in self.bindings if b.env == env), None)

    def describe(self) -> list[str]:
        clusters = [self.clusters.describe()] if self.clusters else []
        return [b.describe() for b in self.bindings] + clusters + list(self.notes)


_FLUX_CLUSTER_FILE = re.compile(r"\Aclusters/([^/]+)/[^/]+\.ya?ml\Z")


def _config_binding(env: str, ref: AgentRef) -> Binding:
    return Binding(
        env=env,
        agent=ref.kind,
        kind=ref.object_kind,
        name=ref.name,
        namespace=ref.namespace,
        cluster=ref.cluster,
        rule="config",
    )


def _related(kustomization_path: str, env_path: str) -> bool:
    """A Flux Kustomization at `kustomization_path` builds (part of) what the env path holds."""
    k, e = norm(kustomization_path), norm(env_path)
    if not k or not e:
        return False
    return k == e or e.startswith(k + "/") or k.startswith(e + "/")


@dataclass(frozen=True)
class _FluxKs:
    directory: str
    name: str
    namespace: str
    path: str


def _flux_kustomizations(snap: Snapshot) -> list[_FluxKs]:
    found: list[_FluxKs] = []
    files = [p for p in sorted(snap.blobs) if _FLUX_CLUSTER_FILE.match(p)]
    snap.prefetch(files)
    for path in files:
        text = snap.read(path)
        if "kustomize.toolkit.fluxcd.io" not in text:
            continue
        try:
            docs = load_all(text)
        except Exception:  # a broken file in clusters/ must not stop correlation for the others
            log.info("%s is not valid YAML; its Kustomizations are not used for env mapping", path)
            continue
        directory = path.split("/")[1]
        for doc in docs:
            if not isinstance(doc, dict) or doc.get("kind") != "Kustomization":
                continue
            if not str(doc.get("apiVersion", "")).startswith("kustomize.toolkit.fluxcd.io/"):
                continue
            meta: dict[str, Any] = doc["metadata"] if isinstance(doc.get("metadata"), dict) else {}
            spec: dict[str, Any] = doc["spec"] if isinstance(doc.get("spec"), dict) else {}
            name = meta.get("name")
            if not isinstance(name, str) or not name:
                continue
            namespace = meta.get("namespace")
            ks_path = spec.get("path")
            found.append(
                _FluxKs(
                    directory=directory,
                    name=name,
                    namespace=namespace if isinstance(namespace, str) and namespace else "flux-system",
                    path=norm(ks_path) if isinstance(ks_path, str) else "",
                )
            )
    return found


def build_env_map(snap: Snapshot, config: RepoConfig | None = None) -> EnvMap:
    """The env mapping at one commit of the base branch (rules in the module docstring)."""
    try:
        cfg = config if config is not None else load_config(snap)
    except ConfigError as exc:
        return EnvMap(envs=(), bindings=(), sha=snap.sha, notes=(f"no environments: {exc}",))
    bindings: list[Binding] = []
    pinned: set[str] = set()
    for env in cfg.envs.values():
        if env.agent is not None:
            bindings.append(_config_binding(env.name, env.agent))
            pinned.add(env.name)

    kss = _flux_kustomizations(snap)
    dirs_per_name: dict[tuple[str, str], set[str]] = {}
    for ks in kss:
        dirs_per_name.setdefault((ks.namespace, ks.name), set()).add(ks.directory)

    def cluster_of(ks: _FluxKs) -> str:
        # The directory names the cluster only where it is needed to tell same-named objects apart,
        # so a single-cluster repo works whatever the Alert calls its cluster.
        return ks.directory if len(dirs_per_name[(ks.namespace, ks.name)]) > 1 else ""

    matched_by_path: set[tuple[str, str]] = set()  # (directory, env)
    unmatched: list[_FluxKs] = []
    for ks in kss:
        hit = False
        for env in cfg.envs.values():
            if env.name in pinned or env.branch:
                continue
            if any(_related(ks.path, p) for p in env.paths):
                bindings.append(
                    Binding(env.name, "flux", "Kustomization", ks.name, ks.namespace, cluster_of(ks), "flux-path")
                )
                matched_by_path.add((ks.directory, env.name))
                hit = True
        if not hit:
            unmatched.append(ks)
    for ks in unmatched:
        env_name = ks.directory
        if env_name in cfg.envs and env_name not in pinned and (ks.directory, env_name) not in matched_by_path:
            bindings.append(
                Binding(env_name, "flux", "Kustomization", ks.name, ks.namespace, cluster_of(ks), "flux-dir")
            )
    clusters = None
    if cfg.clusters.agent is not None:
        clusters = replace(_config_binding(CLUSTERS_ENV, cfg.clusters.agent), rule="clusters")
    return EnvMap(
        envs=tuple(cfg.envs), bindings=tuple(bindings), sha=snap.sha, notes=cfg.notes, clusters=clusters
    )


class EnvMaps:
    """The env map of the base branch's head, rebuilt when the head moves.

    The head is looked at every `ttl` seconds (or after `invalidate()`, which a merge calls), so
    the hot path of an event costs no git call.
    """

    def __init__(
        self,
        repo: GitRepo,
        base_branch: Callable[[], str],
        *,
        ttl: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.repo = repo
        self.base_branch = base_branch
        self.ttl = ttl
        self.clock = clock
        self._map: EnvMap | None = None
        self._checked = 0.0
        self._stale = True
        self._lock = threading.Lock()

    def invalidate(self) -> None:
        self._stale = True

    def current(self) -> EnvMap:
        with self._lock:
            now = self.clock()
            if self._map is not None and not self._stale and now - self._checked < self.ttl:
                return self._map
            try:
                sha = self.repo.resolve(self.base_branch())
                if self._map is None or self._map.sha != sha:
                    self._map = build_env_map(self.repo.snapshot(sha))
                    log.info("deploy env mapping at %s: %s", sha[:7], "; ".join(self._map.describe()) or "none")
            except OpsbotError as exc:
                log.warning("deploy env mapping unavailable: %s", exc)
                if self._map is None:
                    return EnvMap(envs=(), bindings=(), notes=(str(exc),))
            self._checked, self._stale = now, False
            return self._map


# --------------------------------------------------------------------------------------------- ancestry


class Ancestry:
    """"Does this revision contain that commit?", answered by Git and remembered.

    Commits are immutable, so an answer once known is kept (bounded LRU). A commit the repo does
    not have makes `refresh` (the forge's mirror fetch) run once for that revision; a revision still
    unknown afterwards (another repository's commit, a force-pushed-away one) contains nothing.
    """

    def __init__(
        self,
        repo_path: str,
        refresh: Callable[[], None] | None = None,
        *,
        size: int = 50_000,
        unknown_ttl: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.repo_path = repo_path
        self.refresh = refresh
        self.size = size
        self.unknown_ttl = unknown_ttl
        self.clock = clock
        self._known: OrderedDict[tuple[str, str], bool] = OrderedDict()
        self._refreshed: dict[str, float] = {}
        self.git_calls = 0
        self.refreshes = 0

    def contains(self, revision: str, commit: str) -> bool:
        revision, commit = revision.lower(), commit.lower()
        if not _SHA1.match(revision) or not _SHA1.match(commit):
            return False  # a chart version or a digest is never taken for a commit
        if revision == commit:
            return True
        key = (commit, revision)
        hit = self._known.get(key)
        if hit is not None:
            self._known.move_to_end(key)
            return hit
        answer = self._is_ancestor(commit, revision)
        if answer is None and self._may_refresh(revision, commit):
            answer = self._is_ancestor(commit, revision)
        if answer is None:
            log.info("revision %s or commit %s is not in the manifest repo; not correlated", revision[:7],
                     commit[:7])
            return False
        self._known[key] = answer
        if len(self._known) > self.size:
            self._known.popitem(last=False)
        return answer

    def _may_refresh(self, *shas: str) -> bool:
        if self.refresh is None:
            return False
        now = self.clock()
        if any(now - self._refreshed.get(s, -1e18) < self.unknown_ttl for s in shas):
            return False
        for s in shas:
            self._refreshed[s] = now
        if len(self._refreshed) > 10_000:
            self._refreshed.clear()
        try:
            self.refreshes += 1
            self.refresh()
        except Exception as exc:  # a failed fetch only means "not known yet"
            log.warning("mirror refresh for an unknown revision failed: %s", type(exc).__name__)
        return True

    def _is_ancestor(self, ancestor: str, descendant: str) -> bool | None:
        self.git_calls += 1
        proc = subprocess.run(
            ["git", "-C", self.repo_path, "merge-base", "--is-ancestor", ancestor, descendant],
            capture_output=True,
            check=False,
        )
        if proc.returncode == 0:
            return True
        if proc.returncode == 1:
            return False
        return None  # 128: one of them is not a commit here


# --------------------------------------------------------------------------------------------- processor


class DeployBot(Protocol):
    """What the processor needs from `opsbot.app.Opsbot` (a Protocol so tests may pass less)."""

    @property
    def store(self) -> Store: ...

    @property
    def repo(self) -> GitRepo: ...

    @property
    def forge(self) -> Any: ...

    def on_transition(self, hook: Callable[[Request, str, dict[str, Any]], None]) -> None: ...

    @property
    def requests(self) -> Any:
        """The request lifecycle (opsbot.core.requests): the only writer of request state."""
        ...


@dataclass(frozen=True)
class IntakeItem:
    """One stored event on its way to the processor (`item_id` is known only for replays)."""

    source: str
    key: str
    record: dict[str, Any]
    item_id: int | None = None


@dataclass(frozen=True)
class Settled:
    """One request moved by one event (what tests and logs read)."""

    request_id: str
    state: RequestState
    queued: tuple[str, ...]


class DeployProcessor:
    """Correlates stored agent events with merged requests; synchronous, run on one worker thread.

    Every public method is safe to call again with the same input (see the module docstring).
    """

    def __init__(
        self,
        bot: DeployBot,
        settings: Settings,
        *,
        clock: Callable[[], datetime] = utcnow,
        wake: Callable[[], None] | None = None,
        env_maps: EnvMaps | None = None,
        ancestry: Ancestry | None = None,
        pending_scan: int = 500,
        waiting_ttl: float = 1.0,
    ) -> None:
        self.bot = bot
        self.store = bot.store
        self.settings = settings
        self.clock = clock
        self.wake = wake or (lambda: None)
        self.env_maps = env_maps or EnvMaps(
            bot.repo, lambda: settings.base_branch or bot.repo.default_branch()
        )
        refresh = getattr(bot.forge, "refresh", None)
        self.ancestry = ancestry or Ancestry(bot.repo.path, refresh if callable(refresh) else None)
        self.pending_scan = pending_scan
        self.waiting_ttl = waiting_ttl
        self._waiting: dict[str, tuple[float, list[Request]]] = {}
        self._latest: dict[str, dict[str, dict[str, Any]]] = {}
        self._rechecks: set[str] = set()
        self._rechecks_lock = threading.Lock()
        self._warned: set[str] = set()
        self.on_recheck: Callable[[], None] = lambda: None
        #: merge → deployed time is observed here, where a request really moves (not on a replay)
        self.metrics: Metrics = getattr(bot, "metrics", None) or DEFAULT_METRICS
        #: Told of every request this processor moved to `failed` (Opsbot: policies' auto-revert).
        self.on_failed: Callable[[Request], None] = getattr(bot, "deploy_failed", None) or (lambda r: None)
        bot.on_transition(self._on_transition)

    # ------------------------------------------------------------------ events

    def handle(self, item: IntakeItem, *, replay: bool = False) -> list[Settled]:
        """Act on one stored event. `replay` also re-queues posts a crash may have left unqueued."""
        event = event_from_record(item.record)
        if event.kind == CLUSTER_KIND:
            return self._cluster_event(event, item)
        env_map = self.env_maps.current()
        envs: list[str] = []
        env = env_map.resolve(event)
        if env is not None:
            envs.append(env)
        if env_map.applies_clusters(event):
            envs.append(CLUSTERS_ENV)
        settled: list[Settled] = []
        for env in envs:
            if event.outcome is not Outcome.PROGRESSING:
                self._remember(env, event, item)
            settled += self._correlate(env, event, item.key, replay=replay)
        return settled

    def _correlate(
        self,
        env: str,
        event: AgentEvent,
        key: str,
        *,
        replay: bool = False,
        only: Sequence[Request] | None = None,
    ) -> list[Settled]:
        if event.outcome is Outcome.PROGRESSING:
            self._mark_seen(env, event, only)
            return []
        target = RequestState.DEPLOYED if event.outcome is Outcome.SUCCEEDED else RequestState.FAILED
        states = [RequestState.MERGED] if target is RequestState.FAILED else [RequestState.MERGED,
                                                                                RequestState.FAILED]
        if only is not None:
            candidates = [r for r in only if r.state in states]
        else:
            candidates = [r for r in self._waiting_in(env) if r.state in states]
            if replay:
                candidates += self._moved_by(env, target, key)
        settled: list[Settled] = []
        for request in sorted(candidates, key=lambda r: r.created_at):
            if not request.merge_sha or not self.ancestry.contains(event.revision, request.merge_sha):
                continue
            if request.state is target:  # replay: moved by this very event before a crash
                moved: Request | None = request
            else:
                # the lifecycle writes the state and publishes the event (metrics observe merge -> live)
                moved = self.bot.requests.settle(
                    request.id, target, _actor(event), _detail(event, key),
                    at=event.at if target is RequestState.DEPLOYED else None,
                    since_merge=_since_merge(request, event),
                )
            self._forget_waiting(request.env)
            if moved is None:
                continue
            queued = self._queue_posts(moved, target, event)
            settled.append(Settled(moved.id, target, tuple(queued)))
            if target is RequestState.FAILED:
                try:
                    self.on_failed(moved)
                except Exception:  # the failure is stored and told; a hook must not undo that
                    log.exception("the failure hook of %s failed", moved.id)
            log.info("%s %s by %s at %s", moved.id, target, _actor(event), event.revision[:7])
        if settled:
            self.wake()
        return settled

    def _moved_by(self, env: str, target: RequestState, key: str) -> list[Request]:
        """Requests this event already moved (before a crash cut off their posts)."""
        found = []
        for request in self.store.list_requests(states=[target], env=env, limit=50):
            moves = [t for t in self.store.transitions(request.id) if t.to_state is target]
            if moves and moves[-1].detail.endswith(f"event {key}"):
                found.append(request)
        return found

    def _queue_posts(self, request: Request, target: RequestState, event: AgentEvent) -> list[str]:
        channel = self.settings.channel_for_env(request.env)
        facts: dict[str, Any] = {
            "agent": agent_of(event), "agent_kind": event.kind, "agent_name": event.name, "sha": event.revision,
            "reason": event.reason, "message": event.message, "since_merge": _since_merge(request, event),
        }  # fmt: skip
        if request.verb == CREATE_CLUSTER:
            ready = bool(self.store.kv_get(_ready_posted_key(request.id)))
            return deploy_posts.queue_cluster_applied(
                self.store, channel, request, target, ready_already=ready, cluster=event.cluster, **facts
            )
        return deploy_posts.queue_outcome(self.store, channel, request, target, **facts)

    # ------------------------------------------------------------------ created clusters

    def _cluster_event(
        self, event: AgentEvent, item: IntakeItem | None, *, only: Sequence[Request] | None = None
    ) -> list[Settled]:
        """Step two of `create cluster`: the new Cluster reports Ready; told once per request."""
        if event.outcome is not Outcome.SUCCEEDED:
            return []
        binding = self.env_maps.current().clusters
        if binding is not None and binding.cluster and event.cluster and binding.cluster != event.cluster:
            return []  # a Cluster of that name on another management cluster
        if item is not None:
            self._remember_ready(event, item)
        if only is not None:
            candidates = list(only)
        else:
            candidates = self.store.list_requests(
                states=[RequestState.MERGED, RequestState.DEPLOYED, RequestState.FAILED], app=event.name, limit=20
            )
        settled: list[Settled] = []
        for request in candidates:
            if request.verb != CREATE_CLUSTER or request.app != event.name or request.merged_at is None:
                continue
            if request.state not in (RequestState.MERGED, RequestState.DEPLOYED, RequestState.FAILED):
                continue
            if event.at < request.merged_at - CLUSTER_READY_SKEW:
                continue  # Ready since before the merge: an earlier cluster of the same name
            if request.state is not RequestState.DEPLOYED:
                # A Ready cluster proves its manifests were applied, whether or not step one was heard
                # (no `clusters.agent` pinned, or its event lost): the request is deployed now.
                key = item.key if item is not None else "recheck"
                on = f" on {event.cluster}" if event.cluster else ""
                moved = self.bot.requests.settle(
                    request.id, RequestState.DEPLOYED, f"capi:cluster/{event.name}",
                    f"cluster Ready{on}; event {key}", at=event.at, since_merge=_since_merge(request, event),
                )
                if moved is not None:
                    request = moved
                self._forget_waiting(request.env)
            queued = self._queue_cluster_ready(request, event)
            if queued:
                settled.append(Settled(request.id, request.state, tuple(queued)))
                log.info("%s: cluster %s is Ready", request.id, event.name)
        if settled:
            self.wake()
        return settled

    def _queue_cluster_ready(self, request: Request, event: AgentEvent) -> list[str]:
        self.store.kv_set(_ready_posted_key(request.id), event.at.astimezone(UTC).isoformat())
        self._warned.add(request.id)  # live: the "no deploy event" warning has nothing left to say
        return deploy_posts.queue_cluster_ready(
            self.store, self.settings.channel_for_env(request.env), request,
            since_merge=_since_merge(request, event),
        )  # fmt: skip

    def _remember_ready(self, event: AgentEvent, item: IntakeItem) -> None:
        """Keep the latest Ready of each cluster name, for a create-cluster merge known only later."""
        entry = {"key": item.key, "at": event.at.astimezone(UTC).isoformat(), "record": item.record}
        self.store.kv_set(_cluster_key(event.name), json.dumps(entry, separators=(",", ":")))

    def _recheck_cluster(self, request: Request) -> list[Settled]:
        raw = self.store.kv_get(_cluster_key(request.app))
        try:
            entry = json.loads(raw) if raw else None
            event = event_from_record(entry["record"]) if isinstance(entry, dict) else None
        except (ValueError, PayloadError, KeyError, TypeError):
            return []
        if event is None:
            return []
        return self._cluster_event(event, None, only=[request])

    # ------------------------------------------------------------------ requests waiting per env

    def _waiting_in(self, env: str) -> list[Request]:
        """Merged and failed requests of `env`, cached: most events find the same few.

        Every transition made here or announced through the hooks drops the env's entry; the TTL
        only bounds how long a merge made by another replica can go unseen (and the periodic
        `recheck_all_merged` catches that one up).
        """
        now = time.monotonic()
        hit = self._waiting.get(env)
        if hit is not None and now - hit[0] < self.waiting_ttl:
            return hit[1]
        found = self.store.list_requests(states=[RequestState.MERGED, RequestState.FAILED], env=env, limit=500)
        self._waiting[env] = (now, found)
        return found

    def _forget_waiting(self, env: str) -> None:
        self._waiting.pop(env, None)

    # ------------------------------------------------------------------ what the agent said last

    def _remember(self, env: str, event: AgentEvent, item: IntakeItem) -> None:
        """Keep the latest verdict of each agent object (one kv entry each, plus a per-env index
        written only when an object is new), so a later merge can be checked against it."""
        latest = self._latest_for(env)
        obj = f"{agent_of(event)}|{event.cluster}|{event.namespace}|{event.kind}|{event.name}"
        old = latest.get(obj)
        at = event.at.astimezone(UTC).isoformat()
        if old is not None and (old.get("key") == item.key or str(old.get("at", "")) > at):
            return  # the same event again, or an older one redelivered late
        entry = {"key": item.key, "at": at, "record": item.record}
        latest[obj] = entry
        self.store.kv_set(_latest_key(env, obj), json.dumps(entry, separators=(",", ":")))
        if old is None:
            self.store.kv_set(f"deploy:latest:{env}", json.dumps(sorted(latest), separators=(",", ":")))

    def _latest_for(self, env: str) -> dict[str, dict[str, Any]]:
        latest = self._latest.get(env)
        if latest is None:
            latest = {}
            for obj in _json_list(self.store.kv_get(f"deploy:latest:{env}")):
                raw = self.store.kv_get(_latest_key(env, obj))
                try:
                    entry = json.loads(raw) if raw else None
                except ValueError:
                    entry = None
                if isinstance(entry, dict):
                    latest[obj] = entry
            self._latest[env] = latest
        return latest

    def _on_transition(self, request: Request, event: str, facts: dict[str, Any]) -> None:
        """Hook on every request transition (any thread): a merge asks for a recheck."""
        self._forget_waiting(request.env)
        if event != "merged":
            return
        self.env_maps.invalidate()  # the merge moved the base branch; .opsbot.yaml may have changed
        with self._rechecks_lock:
            self._rechecks.add(request.id)
        self.on_recheck()

    def run_rechecks(self, request_ids: Iterable[str] | None = None) -> list[Settled]:
        """Correlate newly merged requests with the latest events already received for their env."""
        if request_ids is None:
            with self._rechecks_lock:
                ids, self._rechecks = sorted(self._rechecks), set()
        else:
            ids = list(request_ids)
        settled: list[Settled] = []
        for rid in ids:
            request = self.store.get_request(rid)
            if request is None or request.state not in (RequestState.MERGED, RequestState.FAILED):
                continue
            if request.verb == CREATE_CLUSTER:
                settled += self._recheck_cluster(request)
            for entry in list(self._latest_for(request.env).values()):
                try:
                    event = event_from_record(entry["record"])
                except (PayloadError, KeyError, TypeError):
                    continue
                current = self.store.get_request(rid)
                if current is None:
                    break
                settled += self._correlate(request.env, event, str(entry.get("key", "")), only=[current])
        return settled

    def recheck_all_merged(self) -> list[Settled]:
        """At start: every request still waiting is checked against what the agents said last."""
        self._latest.clear()  # another replica may have written newer verdicts
        self._waiting.clear()
        waiting = self.store.list_requests(states=[RequestState.MERGED, RequestState.FAILED], limit=500)
        return self.run_rechecks(r.id for r in waiting)

    # ------------------------------------------------------------------ silence

    def _mark_seen(self, env: str, event: AgentEvent, only: Sequence[Request] | None) -> None:
        """A progressing event for a revision with the merge in it: the agent is on it, no warning."""
        candidates = only if only is not None else self._waiting_in(env)
        for request in candidates:
            if request.state is not RequestState.MERGED:
                continue
            if request.id in self._warned or not request.merge_sha:
                continue
            if self.ancestry.contains(event.revision, request.merge_sha):
                self._warned.add(request.id)  # seen in this process: nothing to warn about
                self.store.kv_set(f"deploy:seen:{request.id}", event.revision)

    def sweep(self, now: datetime | None = None) -> list[str]:
        """Queue the one warning for requests merged longer ago than the timeout with no event."""
        now = now or self.clock()
        timeout = timedelta(seconds=self.settings.deploy_timeout_seconds)
        queued: list[str] = []
        env_map = self.env_maps.current()
        for request in self.store.list_requests(states=[RequestState.MERGED], limit=500):
            if request.id in self._warned or request.merged_at is None or now - request.merged_at < timeout:
                continue
            self._warned.add(request.id)
            if self.store.kv_get(f"deploy:seen:{request.id}"):
                continue
            binding = env_map.binding_for(request.env)
            key = deploy_posts.queue_quiet_warning(
                self.store,
                request,
                minutes=max(1, self.settings.deploy_timeout_seconds // 60),
                agent=binding.agent if binding else "",
                agent_kind=binding.kind if binding else "",
                agent_name=binding.name if binding else "",
            )
            if key:
                queued.append(key)
        if queued:
            self.wake()
        return queued

    # ------------------------------------------------------------------ batches and the inbox

    def handle_batch(self, items: Sequence[IntakeItem], *, replay: bool = False) -> int:
        """Handle items, then mark the handled ones done; returns how many were handled.

        An item that raises stays pending and is retried by the next `replay_pending()`; a record
        this version cannot read is marked done (it can never succeed) and logged.
        """
        done: list[IntakeItem] = []
        for item in items:
            try:
                self.handle(item, replay=replay)
            except PayloadError as exc:
                log.error("inbox item %s/%s dropped: %s", item.source, item.key, exc)
            except Exception:
                log.exception("deploy event %s/%s failed; it stays in the inbox and is retried",
                              item.source, item.key)
                continue
            done.append(item)
        self._mark_done(done)
        return len(done)

    def _mark_done(self, items: Sequence[IntakeItem]) -> None:
        wanted: dict[tuple[str, str], None] = {}
        for item in items:
            if item.item_id is not None:
                self.store.inbox_done(item.item_id)
            else:
                wanted[(item.source, item.key)] = None
        # Store.inbox_add does not return the row id, so the ids come from the pending index. Items
        # are handled in arrival order, so they are nearly always at its head: look there first.
        for limit in (len(wanted) + 16, self.pending_scan + len(wanted)):
            if not wanted:
                return
            for pending in self.store.inbox_pending(limit=limit):
                if (pending.source, pending.key) in wanted:
                    self.store.inbox_done(pending.id)
                    del wanted[(pending.source, pending.key)]

    def replay_pending(self, limit: int = 1000) -> int:
        """Handle every agent event a crash (or a failed attempt) left pending; call at start."""
        total = 0
        while True:
            items = [_item(p) for p in self.store.inbox_pending(limit=limit) if p.source in SOURCES]
            if not items:
                return total
            handled = self.handle_batch(items, replay=True)
            total += handled
            if handled < len(items):
                return total  # some keep failing: leave them for the next pass


def _item(pending: InboxItem) -> IntakeItem:
    return IntakeItem(pending.source, pending.key, pending.payload, pending.id)


def _actor(event: DeployEvent) -> str:
    return f"{agent_of(event)}:{event.kind.lower()}/{event.name}"


def _detail(event: DeployEvent, key: str) -> str:
    cluster = f" on {event.cluster}" if event.cluster else ""
    return f"{event.reason} at {event.revision[:12]}{cluster}; event {key}"


def _since_merge(request: Request, event: DeployEvent) -> float | None:
    if request.merged_at is None:
        return None
    return max((event.at - request.merged_at).total_seconds(), 0.0)


def _cluster_key(name: str) -> str:
    return f"deploy:cluster-ready:{hashlib.sha256(name.encode()).hexdigest()[:16]}"


def _ready_posted_key(request_id: str) -> str:
    return f"deploy:cluster-ready-posted:{request_id}"


def _latest_key(env: str, obj: str) -> str:
    return f"deploy:latest:{env}:{hashlib.sha256(obj.encode()).hexdigest()[:16]}"


def _json_list(raw: str | None) -> list[str]:
    try:
        value = json.loads(raw) if raw else []
    except ValueError:
        return []
    return [str(v) for v in value] if isinstance(value, list) else []


# --------------------------------------------------------------------------------------------- intake


class AgentIntake:
    """The bounded queue between the receivers (webhook routes, watchers) and the processor.

    Receivers store first and enqueue second. Room is reserved *before* storing, so an event is
    never stored and then refused: when the queue is full the route answers 503 with Retry-After
    and stores nothing, and the agent's own retry delivers it later. Processing runs on one
    worker thread (the store sees one writer for correlation, and a slow git call never blocks
    the event loop); inbox writes run on another so acknowledgements do not wait for correlation.
    """

    def __init__(
        self,
        processor: DeployProcessor,
        *,
        maxsize: int = 1000,
        batch: int = 64,
        sweep_interval: float = 30.0,
        seen_size: int = 20_000,
        retry_after: int = 5,
    ) -> None:
        self.processor = processor
        self.store = processor.store
        self.maxsize = maxsize
        self.batch = batch
        self.sweep_interval = sweep_interval
        self.retry_after = retry_after
        self._queue: asyncio.Queue[IntakeItem | None] | None = None
        self._reserved = 0
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._seen_size = seen_size
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="opsbot-intake-io")
        self._work = ThreadPoolExecutor(max_workers=1, thread_name_prefix="opsbot-deploys")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._busy = False
        self._kicked = False  # a wake-up marker (None) is in the queue; it takes no room
        self._started = False
        self.accepted = 0
        self.duplicates = 0
        self.refused = 0
        processor.on_recheck = self.kick

    # ------------------------------------------------------------------ lifecycle

    def _bind(self) -> asyncio.Queue[IntakeItem | None]:
        if self._queue is None:
            self._loop = asyncio.get_running_loop()
            self._queue = asyncio.Queue()
        return self._queue

    async def start(self, *, replay: bool = True, background: bool = True) -> None:
        """Replay what a crash left pending, then process the queue (and sweep) in the background.

        Idempotent, so whoever owns the process (the server, a test) may call it.
        """
        self._bind()
        if self._started:
            return
        self._started = True
        if replay:
            await self._run(self.processor.replay_pending)
            await self._run(self.processor.recheck_all_merged)
        if background:
            self._tasks.append(asyncio.create_task(self._consume(), name="opsbot-deploys"))
            if self.sweep_interval > 0:
                self._tasks.append(asyncio.create_task(self._sweeper(), name="opsbot-deploy-sweep"))

    async def stop(self) -> None:
        """Stop the background tasks; what is still queued stays pending in the inbox."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    def close(self) -> None:
        self._io.shutdown(wait=True)
        self._work.shutdown(wait=True)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._work, fn, *args)

    # ------------------------------------------------------------------ receiving (event loop)

    def seen(self, source: str, key: str) -> bool:
        """A key stored before (by this process): answer "duplicate" without a store round trip."""
        return (source, key) in self._seen

    def _remember(self, source: str, key: str) -> None:
        self._seen[(source, key)] = None
        if len(self._seen) > self._seen_size:
            self._seen.popitem(last=False)

    def _used(self) -> int:
        queue = self._bind()
        return queue.qsize() - int(self._kicked) + self._reserved

    def try_reserve(self) -> bool:
        if self._used() >= self.maxsize:
            self.refused += 1
            return False
        self._reserved += 1
        return True

    def release(self) -> None:
        self._reserved = max(self._reserved - 1, 0)

    async def store_event(self, source: str, key: str, record: dict[str, Any]) -> bool:
        """inbox_add on the intake's I/O thread; False for a key stored before."""
        added = await asyncio.get_running_loop().run_in_executor(
            self._io, self.store.inbox_add, source, key, record
        )
        self._remember(source, key)
        if not added:
            self.duplicates += 1
        return added

    def put_reserved(self, item: IntakeItem) -> None:
        queue = self._bind()
        self._reserved = max(self._reserved - 1, 0)
        queue.put_nowait(item)
        self.accepted += 1

    def kick(self) -> None:
        """Wake the worker (from any thread) so rechecks run without waiting for the next event."""
        loop, queue = self._loop, self._queue
        if loop is None or queue is None or loop.is_closed():
            return

        def put() -> None:
            if not self._kicked:
                self._kicked = True
                queue.put_nowait(None)

        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            put()
        else:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(put)

    def submit_from_thread(self, source: str, key: str, record: dict[str, Any],
                           timeout: float | None = None) -> bool:
        """For watchers (their own threads): store, then wait for room in the queue; never drop.

        Returns False for a key stored before. Blocking here is the backpressure: a watcher that
        waits reads the stream later, and the API server keeps the events meanwhile.
        """
        if (source, key) in self._seen:
            return False
        added = self.store.inbox_add(source, key, record)
        loop, queue = self._loop, self._queue
        if loop is None or queue is None:
            raise RuntimeError("AgentIntake.start() has not run")
        loop.call_soon_threadsafe(self._remember, source, key)
        if not added:
            return False
        future = asyncio.run_coroutine_threadsafe(self._put(IntakeItem(source, key, record)), loop)
        future.result(timeout)
        return True

    async def _put(self, item: IntakeItem) -> None:
        queue = self._bind()
        while self._used() >= self.maxsize:
            await asyncio.sleep(0.05)
        queue.put_nowait(item)
        self.accepted += 1

    # ------------------------------------------------------------------ processing

    def _collect(self, queue: asyncio.Queue[IntakeItem | None], first: IntakeItem | None) -> list[IntakeItem]:
        items = [] if first is None else [first]
        if first is None:
            self._kicked = False
        while not queue.empty() and len(items) < self.batch:
            got = queue.get_nowait()
            if got is not None:
                items.append(got)
            else:
                self._kicked = False
        return items

    async def _process(self, items: list[IntakeItem]) -> int:
        self._busy = True
        try:
            handled = await self._run(self.processor.handle_batch, items) if items else 0
            await self._run(self.processor.run_rechecks)
            return handled
        finally:
            self._busy = False

    async def process_queued(self) -> int:
        """Process everything queued now (tests drive the processor with this instead of `start`)."""
        queue = self._bind()
        total = 0
        while not queue.empty():
            total += await self._process(self._collect(queue, None))
        return total

    async def _consume(self) -> None:
        queue = self._bind()
        while True:
            first = await queue.get()
            try:
                await self._process(self._collect(queue, first))
            except Exception:  # the items stay pending in the inbox; the sweeper retries them
                log.exception("deploy processing failed; pending events are retried")

    async def _sweeper(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_interval)
            try:
                await self._run(self.processor.sweep)
                await self._run(self.processor.replay_pending)
                await self._run(self.processor.recheck_all_merged)
            except Exception:
                log.exception("deploy sweep failed; trying again in %.0fs", self.sweep_interval)

    async def idle(self) -> None:
        """Wait until nothing is queued, reserved or being processed (tests, shutdown)."""
        queue = self._bind()
        if not self._tasks:
            await self.process_queued()
            return
        while not queue.empty() or self._busy or self._reserved:
            await asyncio.sleep(0.005)

    @property
    def depth(self) -> int:
        return self._used()

