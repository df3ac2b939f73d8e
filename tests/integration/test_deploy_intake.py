"""Agent webhooks → inbox → correlation → outbox, with real SQLite, real Git and real aiohttp.

The routes are mounted on an app of the test's own (served on 127.0.0.1 by pytest-aiohttp); the
chat side is a recording `ChatPoster` behind the real `OutboxWorker`, so what is asserted is what
would be posted. Payloads are the captured shapes in tests/fixtures/payloads with the revision set
to a real merge commit of the test's repo. The processor runs when the test says so
(`rig.settle()`), never on a timer.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from opsbot.app import Opsbot
from opsbot.chat import texts
from opsbot.core.model import Actor, Outcome, Request, RequestState, Thread
from opsbot.intake.agent_routes import ARGOCD_PATH, FLUX_PATH, agent_webhook_routes
from opsbot.intake.agents import parse_argocd_event, parse_flux_event
from opsbot.intake.deploys import (
    AgentIntake,
    DeployProcessor,
    EnvMap,
    build_env_map,
    event_from_record,
    event_record,
    inbox_key,
)
from opsbot.manifests.gitrepo import GitRepo
from opsbot.notify.deploy_posts import post_keys
from opsbot.notify.outbox import OutboxWorker
from opsbot.settings import Settings, load_settings
from tests.plugins.slack import fleet_with_config
from tests.repos import make_repo

ROOT = Path(__file__).resolve().parents[2]
PAYLOADS = ROOT / "tests" / "fixtures" / "payloads"
FLUX_SECRET = "flux-hmac-test-secret-9d3f"
ARGO_TOKEN = "argo-bearer-test-token-71c2"
DEPLOY_CHANNEL = "C0DEPLOY"
OPS_CHANNEL = "C0OPS"
PROD_AGENT = {"kind": "flux", "name": "apps", "namespace": "flux-system", "cluster": "prod-eu"}


def load(kind: str, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((PAYLOADS / kind / f"{name}.json").read_text())
    return data


def flux_sign(body: bytes, secret: str = FLUX_SECRET, algo: str = "sha256") -> str:
    return f"{algo}=" + hmac.new(secret.encode(), body, getattr(hashlib, algo)).hexdigest()


def stamp(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def flux_event(name: str, sha: str, *, at: datetime | None = None, cluster: str | None = "prod-eu",
               **changes: Any) -> dict[str, Any]:
    """A fixture event with its revision (in whichever metadata form the fixture uses) set to `sha`."""
    payload = load("flux", name)
    metadata = payload.setdefault("metadata", {})
    for key in list(metadata):
        if key.endswith("revision") and not key.endswith("originRevision"):
            ref = str(metadata[key]).split("@")[0] if "@" in str(metadata[key]) else "main"
            metadata[key] = f"{ref}@sha1:{sha}"
    if cluster is None:
        metadata.pop("cluster", None)
    else:
        metadata["cluster"] = cluster
    if at is not None:
        payload["timestamp"] = stamp(at)
    payload.update(changes)
    return payload


def argo_event(name: str, sha: str, *, app: str = "frontend-staging", at: datetime | None = None) -> dict[str, Any]:
    payload = load("argocd", name)
    payload.update(app=app, revision=sha, syncRevision=sha)
    if at is not None:
        payload["finishedAt"] = stamp(at)
    return payload


class RecordingPoster:
    """A ChatPoster that keeps what would have been posted (the outbox worker drives it)."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, str, str | None]] = []
        self.updates: list[tuple[str, str, str]] = []
        self.fail_posts = 0

    async def post(self, channel: str, text: str, blocks: list[dict[str, Any]] | None = None,
                   thread_ts: str | None = None) -> str:
        self.posts.append((channel, text, thread_ts))
        return f"1800000000.{len(self.posts):06d}"

    async def update(self, channel: str, ts: str, text: str, blocks: list[dict[str, Any]] | None = None) -> None:
        self.updates.append((channel, ts, _readable(blocks) or text))

    async def ephemeral(self, channel: str, user: str, text: str,
                        blocks: list[dict[str, Any]] | None = None) -> None:
        raise AssertionError("deploy notifications are never ephemeral")


def _readable(blocks: list[dict[str, Any]] | None) -> str:
    out: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "mrkdwn":
                out.append(str(node.get("text", "")))
                return
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(blocks or [])
    return "\n".join(out)


@dataclass
class Rig:
    bot: Opsbot
    settings: Settings
    processor: DeployProcessor
    intake: AgentIntake
    client: TestClient
    poster: RecordingPoster
    worker: OutboxWorker
    threads: int = 0
    closed: list[Any] = field(default_factory=list)

    # requests ------------------------------------------------------------------------------------
    def ask(self, command: str, user: str = "U0ALICE") -> Request:
        self.threads += 1
        self.bot.handle(command, Actor(user), Thread(OPS_CHANNEL, f"1700000000.{self.threads:06d}"))
        newest = self.bot.store.list_requests(limit=1)
        assert newest and newest[0].command == command, f"{command!r} opened no request"
        return newest[0]

    def merge(self, command: str) -> Request:
        request = self.ask(command)
        self.bot.handle(f"approve {request.id}", Actor("U0BOB"))
        self.bot.handle(f"merge {request.id}", Actor("U0BOB"))
        merged = self.bot.store.get_request(request.id)
        assert merged is not None and merged.state is RequestState.MERGED and merged.merge_sha
        return merged

    def state(self, request: Request) -> RequestState:
        current = self.bot.store.get_request(request.id)
        assert current is not None
        return current.state

    # HTTP ------------------------------------------------------------------------------------------
    async def flux(self, payload: dict[str, Any] | bytes, *, signature: str | None = "good",
                   headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any], Any]:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        sent = {"Content-Type": "application/json", "Gotk-Component": "kustomize-controller"}
        if signature == "good":
            sent["X-Signature"] = flux_sign(body)
        elif signature is not None:
            sent["X-Signature"] = signature
        sent.update(headers or {})
        resp = await self.client.post(FLUX_PATH, data=body, headers=sent)
        return resp.status, await resp.json(), resp.headers

    async def argocd(self, payload: dict[str, Any] | bytes, *, token: str | None = ARGO_TOKEN,
                     scheme: str = "Bearer") -> tuple[int, dict[str, Any], Any]:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        sent = {"Content-Type": "application/json"}
        if token is not None:
            sent["Authorization"] = f"{scheme} {token}"
        resp = await self.client.post(ARGOCD_PATH, data=body, headers=sent)
        return resp.status, await resp.json(), resp.headers

    # what Slack would show -------------------------------------------------------------------------
    async def settle(self) -> None:
        await self.intake.idle()
        await self.worker.drain_until_idle()

    def replies(self, request: Request) -> list[str]:
        return [text for channel, text, ts in self.poster.posts
                if channel == OPS_CHANNEL and ts == request.thread_ts]

    def channel_lines(self) -> list[str]:
        return [text for channel, text, _ts in self.poster.posts if channel == DEPLOY_CHANNEL]

    def root_status(self, request: Request) -> str:
        texts_ = [text for channel, ts, text in self.poster.updates if ts == request.thread_ts]
        assert texts_, f"the root of {request.id} was never updated"
        return next(line for line in texts_[-1].splitlines() if line.startswith("*Status:*"))

    def pending(self) -> int:
        return len(self.bot.store.inbox_pending())

    def inbox_keys(self) -> list[str]:
        return [i.key for i in self.bot.store.inbox_pending()]


RigFactory = Callable[..., Awaitable[Rig]]


def make_settings(repo: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "repo": str(repo),
        "deploy_channel": DEPLOY_CHANNEL,
        "flux_webhook_secret": FLUX_SECRET,
        "argocd_webhook_token": ARGO_TOKEN,
    }
    values.update(overrides)
    return load_settings(environ={}, **values)


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[RigFactory]:
    made: list[Rig] = []

    async def make(*, repo: Path | None = None, maxsize: int = 1000, clock: Any = None,
                   **overrides: Any) -> Rig:
        repo = repo or fleet_with_config(tmp_path / f"fleet{len(made)}", production={"agent": PROD_AGENT})
        settings_ = make_settings(repo, **overrides)
        bot = Opsbot(settings_)
        poster = RecordingPoster()
        worker = OutboxWorker(bot.store, poster, base_delay=0.01, max_delay=0.05)
        kwargs = {"clock": clock} if clock is not None else {}
        processor = DeployProcessor(bot, settings_, **kwargs)
        intake = AgentIntake(processor, maxsize=maxsize, sweep_interval=0)
        await intake.start(background=False)
        app = web.Application()
        app.add_routes(agent_webhook_routes(bot, settings_, intake))
        client = TestClient(TestServer(app, host="127.0.0.1"))
        await client.start_server()
        made.append(rig_ := Rig(bot, settings_, processor, intake, client, poster, worker))
        return rig_

    yield make
    for r in made:
        await r.client.close()
        r.worker.close()
        r.intake.close()
        r.bot.close()


# --------------------------------------------------------------------------------------------- shapes


FLUX_FIXTURES = sorted(p.stem for p in (PAYLOADS / "flux").glob("*.json"))
ARGO_FIXTURES = sorted(p.stem for p in (PAYLOADS / "argocd").glob("*.json"))


@pytest.mark.parametrize("name", FLUX_FIXTURES)
async def test_every_flux_payload_shape_is_stored_as_parsed(rig: RigFactory, name: str) -> None:
    r = await rig()
    payload = load("flux", name)
    body = json.dumps(payload).encode()
    status, answer, _ = await r.flux(body)
    assert (status, answer) == (202, {"result": "accepted"})
    (item,) = r.bot.store.inbox_pending()
    stored = event_from_record(item.payload)
    parsed = parse_flux_event(payload, received_at=stored.at)
    assert item.source == "flux" and item.key == inbox_key(parsed)
    for attr in ("kind", "name", "namespace", "revision", "outcome", "reason", "message", "cluster", "raw_revision"):
        assert getattr(stored, attr) == getattr(parsed, attr)
    await r.settle()
    assert r.pending() == 0  # processed (nothing matched: no request waits) and marked done


def test_the_fixtures_cover_both_metadata_forms_and_both_controllers() -> None:
    forms = {"prefixed": False, "unprefixed": False}
    controllers = set()
    for name in FLUX_FIXTURES:
        payload = load("flux", name)
        controllers.add(payload["reportingController"])
        for key in payload.get("metadata", {}):
            if key.endswith("revision"):
                forms["prefixed" if "/" in key else "unprefixed"] = True
    assert forms == {"prefixed": True, "unprefixed": True}
    assert controllers == {"kustomize-controller", "helm-controller"}
    assert set(ARGO_FIXTURES) == {"app-deployed", "app-sync-failed", "app-health-degraded"}


@pytest.mark.parametrize("name", ARGO_FIXTURES)
async def test_every_argocd_payload_shape_is_stored_as_parsed(rig: RigFactory, name: str) -> None:
    r = await rig()
    payload = load("argocd", name)
    status, answer, _ = await r.argocd(payload)
    assert (status, answer) == (202, {"result": "accepted"})
    (item,) = r.bot.store.inbox_pending()
    stored = event_from_record(item.payload)
    parsed = parse_argocd_event(payload, received_at=stored.at)
    assert (stored.outcome, stored.revision, stored.message) == (parsed.outcome, parsed.revision, parsed.message)


async def test_a_source_event_is_acknowledged_and_not_stored(rig: RigFactory) -> None:
    r = await rig()
    payload = load("flux", "kustomization-succeeded")
    payload["involvedObject"].update(kind="GitRepository", apiVersion="source.toolkit.fluxcd.io/v1")
    status, answer, _ = await r.flux(payload)
    assert status == 202 and answer["result"] == "ignored" and "GitRepository" in answer["reason"]
    assert r.pending() == 0


# --------------------------------------------------------------------------------------------- authentication


@pytest.mark.parametrize("signature", [
    None,  # missing
    "sha256=" + "0" * 64,  # wrong
    "sha256=",  # empty
    "md5=abcdef",  # unknown algorithm
    "garbage",
])
async def test_bad_or_missing_flux_signature_is_401_and_nothing_stored(rig: RigFactory, signature: str | None) -> None:
    r = await rig()
    request = r.merge("scale frontend 5 in production")
    status, answer, _ = await r.flux(flux_event("kustomization-succeeded", request.merge_sha), signature=signature)
    assert status == 401 and "X-Signature" in answer["error"]
    await r.settle()
    assert r.pending() == 0 and r.poster.posts == []
    assert r.state(request) is RequestState.MERGED


async def test_flux_signature_with_the_wrong_secret_or_another_body_is_refused(rig: RigFactory) -> None:
    r = await rig()
    body = json.dumps(load("flux", "kustomization-succeeded")).encode()
    wrong_secret = await r.flux(body, signature=flux_sign(body, "not-the-secret"))
    other_body = await r.flux(body, signature=flux_sign(body + b" "))
    assert wrong_secret[0] == other_body[0] == 401 and r.pending() == 0


@pytest.mark.parametrize("algo", ["sha256", "sha512", "sha1"])
async def test_flux_signature_algorithms(rig: RigFactory, algo: str) -> None:
    r = await rig()
    body = json.dumps(load("flux", "kustomization-succeeded")).encode()
    assert (await r.flux(body, signature=flux_sign(body, algo=algo)))[0] == 202


async def test_no_flux_secret_configured_refuses_everything(rig: RigFactory) -> None:
    r = await rig(flux_webhook_secret="")
    body = json.dumps(load("flux", "kustomization-succeeded")).encode()
    # even a body "signed" with the empty key is refused: anyone can compute that HMAC
    status, answer, _ = await r.flux(body, signature=flux_sign(body, ""))
    assert status == 401 and answer == {"error": "FLUX_WEBHOOK_SECRET is not configured"}
    assert r.pending() == 0


@pytest.mark.parametrize(("token", "scheme"), [
    (None, "Bearer"), ("wrong-token", "Bearer"), (ARGO_TOKEN, "Basic"), ("", "Bearer"), (ARGO_TOKEN + "x", "Bearer"),
])
async def test_bad_or_missing_argocd_token_is_401_and_nothing_stored(
    rig: RigFactory, token: str | None, scheme: str
) -> None:
    r = await rig()
    status, answer, _ = await r.argocd(load("argocd", "app-deployed"), token=token, scheme=scheme)
    assert status == 401 and "Bearer" in answer["error"]
    assert r.pending() == 0


async def test_no_argocd_token_configured_refuses_everything(rig: RigFactory) -> None:
    r = await rig(argocd_webhook_token="")
    status, answer, _ = await r.argocd(load("argocd", "app-deployed"), token="")
    assert status == 401 and answer == {"error": "ARGOCD_WEBHOOK_TOKEN is not configured"}


async def test_the_secrets_are_never_in_answers_or_logs(rig: RigFactory, caplog: pytest.LogCaptureFixture) -> None:
    r = await rig()
    caplog.set_level("DEBUG")
    answers = [
        await r.flux(b"{}", signature="sha256=" + "1" * 64),
        await r.argocd(b"{}", token="nope"),
        await r.flux(b"not json"),
        await r.argocd(b"[]"),
    ]
    seen = json.dumps([a[1] for a in answers]) + caplog.text
    assert FLUX_SECRET not in seen and ARGO_TOKEN not in seen


# --------------------------------------------------------------------------------------------- bad input


async def test_oversized_body_is_413_and_nothing_stored(rig: RigFactory) -> None:
    r = await rig(max_body_bytes=2000)
    payload = load("flux", "kustomization-succeeded")
    payload["message"] = "x" * 5000
    status, answer, _ = await r.flux(payload)
    assert status == 413 and "2000" in answer["error"]
    status, _, _ = await r.argocd(b"{" + b" " * 3000 + b"}")
    assert status == 413
    assert r.pending() == 0


@pytest.mark.parametrize(("body", "message"), [
    (b"not json", "body is not JSON: Expecting value at line 1 column 1"),
    (b"\xff\xfe\x00", "body is not JSON"),
    (b"[]", "flux event must be a JSON object, got an array"),
    (b'{"severity": "info"}', "involvedObject is missing"),
    (json.dumps({**load("flux", "kustomization-succeeded"), "severity": "loud"}).encode(),
     "severity must be one of info, error, trace; got 'loud'"),
    (json.dumps({**load("flux", "kustomization-succeeded"), "metadata": {"revision": "main@sha1:xyz"}}).encode(),
     "bad metadata revision 'main@sha1:xyz': the sha1 part must be 40 hex digits"),
])
async def test_malformed_flux_event_is_400_with_what_is_wrong(rig: RigFactory, body: bytes, message: str) -> None:
    r = await rig()
    status, answer, _ = await r.flux(body)
    assert status == 400 and answer["error"].startswith(message)
    assert r.pending() == 0


async def test_malformed_argocd_event_is_400_with_what_is_wrong(rig: RigFactory) -> None:
    r = await rig()
    status, answer, _ = await r.argocd({**load("argocd", "app-deployed"), "phase": "Exploded"})
    assert status == 400 and answer["error"].startswith("unknown operation phase 'Exploded' in phase")
    status, answer, _ = await r.argocd({"app": ""})
    assert status == 400 and "app must be a non-empty string" in answer["error"]
    assert r.pending() == 0


# --------------------------------------------------------------------------------------------- correlation


async def test_success_event_with_the_merge_commit_deploys_and_posts_once(rig: RigFactory) -> None:
    r = await rig()
    request = r.merge("promote frontend to production")
    assert request.merged_at is not None
    live_at = (request.merged_at + timedelta(seconds=102)).replace(microsecond=0)  # RFC 3339 seconds
    payload = flux_event("kustomization-succeeded", request.merge_sha, at=live_at)
    assert (await r.flux(payload))[:2] == (202, {"result": "accepted"})
    await r.settle()

    done = r.bot.store.get_request(request.id)
    assert done is not None and done.state is RequestState.DEPLOYED
    assert done.deployed_at == live_at
    since = texts.duration(live_at - request.merged_at)
    short = request.merge_sha[:7]
    assert r.replies(request) == [f"🚀 Live in production — Flux kustomization apps applied {short}, {since} after merge"]
    assert r.root_status(request) == "*Status:* live in production"
    (line,) = r.channel_lines()
    assert line.startswith("🚀 production · frontend image frontend ghcr.io/acme/frontend:1.4.2 → "
                           "ghcr.io/acme/frontend:1.5.0 · ")
    assert "|PR #1> by <@U0ALICE>, approved by <@U0BOB>" in line and line.endswith(f"live {since} after merge")
    assert r.pending() == 0
    moves = r.bot.store.transitions(request.id)
    assert (moves[-1].from_state, moves[-1].to_state, moves[-1].actor) == (
        RequestState.MERGED, RequestState.DEPLOYED, "flux:kustomization/apps")

    # the redelivery, and Flux repeating the same status with a new duration: nothing new
    again = copy.deepcopy(payload)
    again["message"] = "Reconciliation finished in 1.902s, next run in 10m0s"
    for body in (payload, again):
        assert (await r.flux(body))[:2] == (202, {"result": "duplicate"})
    await r.settle()
    assert len(r.poster.posts) == 2 and len(r.poster.updates) == 1
    assert len(r.bot.store.transitions(request.id)) == len(moves)


async def test_the_prefixed_metadata_form_correlates_the_same(rig: RigFactory) -> None:
    r = await rig()
    request = r.merge("scale frontend 5 in production")
    payload = flux_event("kustomization-health-check-failed-prefixed", request.merge_sha, severity="info",
                         reason="ReconciliationSucceeded", message="Reconciliation finished in 3s")
    assert "kustomize.toolkit.fluxcd.io/revision" in payload["metadata"]
    await r.flux(payload)
    await r.settle()
    assert r.state(request) is RequestState.DEPLOYED


async def test_one_reconcile_at_the_last_merge_deploys_three_requests(rig: RigFactory) -> None:
    r = await rig()
    requests = [r.merge(c) for c in ("scale frontend 5 in production", "scale cache 3 in production",
                                     "promote frontend to production")]
    last = requests[-1].merge_sha
    await r.flux(flux_event("kustomization-succeeded", last))
    await r.settle()
    assert [r.state(q) for q in requests] == [RequestState.DEPLOYED] * 3
    for q in requests:
        (reply,) = r.replies(q)
        assert reply.startswith(f"🚀 Live in production — Flux kustomization apps applied {last[:7]}")
    assert len(r.channel_lines()) == 3


async def test_an_event_for_an_older_revision_deploys_nothing(rig: RigFactory) -> None:
    r = await rig()
    first = r.merge("scale frontend 5 in production")
    second = r.merge("scale cache 3 in production")
    await r.flux(flux_event("kustomization-succeeded", first.base_sha))  # before both merges
    await r.settle()
    assert [r.state(first), r.state(second)] == [RequestState.MERGED] * 2
    await r.flux(flux_event("kustomization-succeeded", first.merge_sha))  # contains the first only
    await r.settle()
    assert [r.state(first), r.state(second)] == [RequestState.DEPLOYED, RequestState.MERGED]
    assert r.replies(second) == [] and len(r.channel_lines()) == 1


async def test_an_unknown_revision_refreshes_the_mirror_once_and_deploys_nothing(rig: RigFactory) -> None:
    r = await rig()
    request = r.merge("scale frontend 5 in production")
    fetched: list[int] = []
    r.processor.ancestry.refresh = lambda: fetched.append(1)
    for _ in range(2):
        await r.flux(flux_event("kustomization-succeeded", "ab" * 20, message=f"run {len(fetched)}"))
        await r.flux(flux_event("kustomization-succeeded", "ab" * 20, cluster=None))
    await r.settle()
    assert r.state(request) is RequestState.MERGED and fetched == [1]


async def test_events_of_other_envs_clusters_and_objects_deploy_nothing(rig: RigFactory) -> None:
    r = await rig()
    request = r.merge("scale frontend 5 in production")
    sha = request.merge_sha
    other_cluster = flux_event("kustomization-succeeded", sha, cluster="staging-eu")
    other_object = flux_event("kustomization-succeeded", sha)
    other_object["involvedObject"]["name"] = "infra"
    other_namespace = flux_event("kustomization-succeeded", sha)
    other_namespace["involvedObject"]["namespace"] = "tenants"
    for payload in (other_cluster, other_object, other_namespace):
        assert (await r.flux(payload))[0] == 202
    await r.argocd(argo_event("app-deployed", sha, app="production"))  # production is pinned to Flux
    await r.settle()
    assert r.state(request) is RequestState.MERGED and r.poster.posts == []


async def test_progressing_events_post_nothing(rig: RigFactory) -> None:
    r = await rig()
    request = r.merge("scale frontend 5 in production")
    await r.flux(flux_event("kustomization-progressing", request.merge_sha))
    await r.settle()
    assert r.state(request) is RequestState.MERGED and r.poster.posts == [] and r.pending() == 0


async def test_failure_then_success_later(rig: RigFactory) -> None:
    r = await rig()
    request = r.merge("scale frontend 5 in production")
    failed = flux_event("kustomization-health-check-failed-unprefixed", request.merge_sha)
    await r.flux(failed)
    await r.settle()
    assert r.state(request) is RequestState.FAILED
    message = failed["message"]
    assert r.replies(request) == [f"❌ Failed in production — HealthCheckFailed: {message}"]
    assert r.root_status(request) == f"*Status:* failed in production: HealthCheckFailed: {message}"
    (line,) = r.channel_lines()
    assert line.startswith("❌ production · ") and line.endswith(f"failed: HealthCheckFailed: {message}")

    # the same failure again (Flux retries every retryInterval), and another failure: no new post
    await r.flux(failed)
    again = copy.deepcopy(failed)
    again["reason"] = "ReconciliationFailed"
    await r.flux(again)
    await r.settle()
    assert len(r.replies(request)) == 1 and len(r.channel_lines()) == 1

    # fixed by a later commit that contains the merge: failed -> deployed, told once
    fix = r.merge("scale cache 3 in production")
    await r.flux(flux_event("kustomization-succeeded", fix.merge_sha))
    await r.settle()
    assert r.state(request) is RequestState.DEPLOYED and r.state(fix) is RequestState.DEPLOYED
    assert r.replies(request)[1].startswith("🚀 Live in production")
    assert r.root_status(request) == "*Status:* live in production"
    assert len(r.channel_lines()) == 3


async def test_helmrelease_upgrade_failed_with_the_commit_fails_the_request(rig: RigFactory, tmp_path: Path) -> None:
    repo = fleet_with_config(tmp_path / "hr", production={
        "agent": {"kind": "flux", "object": "HelmRelease", "name": "podinfo", "namespace": "production"}})
    r = await rig(repo=repo)
    request = r.merge("scale frontend 5 in production")
    chart_only = load("flux", "helmrelease-upgrade-failed")
    await r.flux(chart_only)  # a chart version is never taken for a commit
    await r.settle()
    assert r.state(request) is RequestState.MERGED
    with_commit = load("flux", "helmrelease-upgrade-failed")
    with_commit["metadata"]["helm.toolkit.fluxcd.io/originRevision"] = f"main@sha1:{request.merge_sha}"
    await r.flux(with_commit)
    await r.settle()
    assert r.state(request) is RequestState.FAILED
    assert r.replies(request)[0].startswith("❌ Failed in production — UpgradeFailed: Helm upgrade failed")


@pytest.mark.parametrize(("name", "state", "reply"), [
    ("app-deployed", RequestState.DEPLOYED, "🚀 Live in staging — Argo CD application frontend-staging applied"),
    ("app-sync-failed", RequestState.FAILED, "❌ Failed in staging — Failed: one or more objects failed to apply"),
    ("app-health-degraded", RequestState.FAILED,
     "❌ Failed in staging — Degraded: Deployment \"guestbook-ui\" exceeded its progress deadline"),
])
async def test_argocd_outcomes_for_an_application_named_app_env(
    rig: RigFactory, name: str, state: RequestState, reply: str
) -> None:
    r = await rig()
    request = r.merge("scale frontend 3 in staging")
    await r.argocd(argo_event(name, request.merge_sha))
    await r.settle()
    assert r.state(request) is state
    (got,) = r.replies(request)
    assert got.startswith(reply)


async def test_an_event_before_the_merge_is_known_is_not_lost(rig: RigFactory) -> None:
    r = await rig()
    request = r.ask("scale frontend 5 in production")
    r.bot.handle(f"approve {request.id}", Actor("U0BOB"))
    # The agent reconciles the merge commit before opsbot has recorded the merge (e.g. the GitHub
    # webhook is late): simulate by merging on the forge first and telling the request afterwards.
    assert request.pr_number is not None
    pr = r.bot.forge.merge_pr(request.pr_number, "merged by hand")
    await r.flux(flux_event("kustomization-succeeded", pr.merge_sha))
    await r.settle()
    assert r.state(request) is RequestState.APPROVED
    r.bot.requests.forge_merged(request.pr_number, pr.merge_sha, "U0BOB")
    await r.settle()
    assert r.state(request) is RequestState.DEPLOYED
    assert len(r.replies(request)) == 1 and len(r.channel_lines()) == 1


# --------------------------------------------------------------------------------------------- silence


async def test_no_event_within_the_timeout_warns_once(rig: RigFactory) -> None:
    now = [datetime.now(UTC)]
    r = await rig(clock=lambda: now[0], deploy_timeout_seconds=600)
    quiet = r.merge("scale frontend 5 in production")
    seen = r.merge("scale frontend 3 in staging")
    await r.argocd(argo_event("app-deployed", seen.merge_sha) | {"phase": "Running", "healthStatus": "Progressing"})
    await r.settle()
    # the clock starts at the later merge, not at the test's start: however slow the merges were,
    # "601 s later" is then 601 s after both
    assert quiet.merged_at is not None and seen.merged_at is not None
    now[0] = max(now[0], quiet.merged_at, seen.merged_at)
    assert r.processor.sweep() == []  # not overdue yet
    now[0] += timedelta(seconds=601)
    assert r.processor.sweep() == [f"deploy:{quiet.id}:warning:reply"]
    assert r.processor.sweep() == []
    await r.settle()
    assert r.replies(quiet) == ["⚠️ No deploy event for production within 10 min of the merge. "
                                "Check that Flux kustomization apps is reconciling this branch."]
    assert r.replies(seen) == []  # the agent was seen working on it: no false alarm
    assert r.state(quiet) is RequestState.MERGED


async def test_the_warning_is_not_repeated_by_a_new_process(rig: RigFactory) -> None:
    now = [datetime.now(UTC)]
    first = await rig(clock=lambda: now[0])
    request = first.merge("scale frontend 5 in production")
    assert request.merged_at is not None
    now[0] = request.merged_at + timedelta(hours=1)  # from the recorded merge, not the wall clock
    assert first.processor.sweep() == [f"deploy:{request.id}:warning:reply"]
    second = DeployProcessor(first.bot, first.settings, clock=lambda: now[0])
    assert second.sweep() == []  # the outbox key says it was queued


# --------------------------------------------------------------------------------------------- durability


async def test_killed_between_202_and_processing_posts_exactly_once_after_restart(
    rig: RigFactory, tmp_path: Path
) -> None:
    r = await rig()
    request = r.merge("scale frontend 5 in production")
    status, answer, _ = await r.flux(flux_event("kustomization-succeeded", request.merge_sha))
    assert (status, answer) == (202, {"result": "accepted"})
    assert r.pending() == 1  # stored before the answer, not processed yet
    # "kill": drop the queue, close every object; only the SQLite file and the repo remain
    settings_ = r.settings
    await r.client.close()
    r.intake.close()
    r.bot.close()
    r.closed.append(True)

    bot = Opsbot(settings_)
    try:
        processor = DeployProcessor(bot, settings_)
        intake = AgentIntake(processor, sweep_interval=0)
        await intake.start(background=False)  # replays the inbox
        poster = RecordingPoster()
        worker = OutboxWorker(bot.store, poster)
        await worker.drain_until_idle()
        got = bot.store.get_request(request.id)
        assert got is not None and got.state is RequestState.DEPLOYED
        assert sorted(p[0] for p in poster.posts) == [DEPLOY_CHANNEL, OPS_CHANNEL] and len(poster.updates) == 1
        assert bot.store.inbox_pending() == []
        # a third process replays nothing and posts nothing
        third = DeployProcessor(bot, settings_)
        assert third.replay_pending() == 0
        assert await worker.drain_until_idle() == 0
        intake.close()
        worker.close()
    finally:
        bot.close()
    r.bot = Opsbot(settings_)  # the fixture closes it


class _CrashOnce:
    """A store whose second `outbox_add` fails once: the process dies after the transition and the
    thread reply were written, before the root update and the channel line."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.calls = 0

    def outbox_add(self, key: str, kind: str, payload: dict[str, Any]) -> bool:
        self.calls += 1
        if self.calls == 2:
            raise OSError("disk full")
        return bool(self._store.outbox_add(key, kind, payload))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


async def test_crash_between_transition_and_posts_is_completed_by_the_replay(rig: RigFactory) -> None:
    r = await rig()
    request = r.merge("scale frontend 5 in production")
    r.processor.store = _CrashOnce(r.bot.store)  # type: ignore[assignment]
    await r.flux(flux_event("kustomization-succeeded", request.merge_sha))
    await r.settle()
    assert r.state(request) is RequestState.DEPLOYED  # the transition committed ...
    assert len(r.replies(request)) == 1 and r.channel_lines() == []  # ... the reply too, not the rest
    assert r.poster.updates == [] and r.pending() == 1  # the event stays pending
    assert r.processor.replay_pending() == 1
    await r.settle()
    assert len(r.replies(request)) == 1 and len(r.channel_lines()) == 1 and r.pending() == 0
    assert len(r.poster.updates) == 1
    assert r.processor.replay_pending() == 0


async def test_an_event_seen_by_webhook_and_watcher_is_told_once(rig: RigFactory) -> None:
    r = await rig()
    request = r.merge("scale frontend 5 in production")
    event = parse_flux_event(flux_event("kustomization-succeeded", request.merge_sha), received_at=datetime.now(UTC))
    watched = type(event)(**{**event.__dict__, "source": "watch"})
    await r.flux(flux_event("kustomization-succeeded", request.merge_sha))
    await r.settle()
    assert r.bot.store.inbox_add("watch", inbox_key(watched), event_record(watched, datetime.now(UTC)))
    assert r.processor.replay_pending() == 1
    await r.settle()
    assert len(r.replies(request)) == 1 and len(r.channel_lines()) == 1


# --------------------------------------------------------------------------------------------- overload


async def test_a_full_queue_answers_503_with_retry_after_and_stores_nothing(rig: RigFactory) -> None:
    r = await rig(maxsize=2)
    request = r.merge("scale frontend 5 in production")
    accepted = [await r.flux(flux_event("kustomization-progressing", request.merge_sha, message=f"step {i}",
                                        reason=reason))
                for i, reason in enumerate(("Progressing", "ProgressingWithRetry"))]
    assert [a[0] for a in accepted] == [202, 202]
    success = flux_event("kustomization-succeeded", request.merge_sha)
    status, answer, headers = await r.flux(success)
    assert status == 503 and headers["Retry-After"] == "5" and "retry" in answer["error"]
    assert r.pending() == 2  # the refused event was not stored: the agent's retry brings it
    await r.settle()
    status, answer, _ = await r.flux(success)  # the agent retries after Retry-After
    assert (status, answer) == (202, {"result": "accepted"})
    await r.settle()
    assert r.state(request) is RequestState.DEPLOYED


async def test_concurrent_deliveries_of_one_event_store_and_post_once(rig: RigFactory) -> None:
    r = await rig()
    request = r.merge("scale frontend 5 in production")
    payload = flux_event("kustomization-succeeded", request.merge_sha)
    answers = await asyncio.gather(*(r.flux(payload) for _ in range(20)))
    results = sorted(a[1]["result"] for a in answers)
    assert results == ["accepted"] + ["duplicate"] * 19
    await r.settle()
    assert len(r.replies(request)) == 1 and len(r.channel_lines()) == 1


# --------------------------------------------------------------------------------------------- env mapping


def _env_map(repo: Path) -> EnvMap:
    git = GitRepo(str(repo))
    try:
        return build_env_map(git.snapshot("main"))
    finally:
        git.close()


def _event(kind: str, name: str, namespace: str = "flux-system", cluster: str = "") -> Any:
    payload = load("flux", "kustomization-succeeded")
    payload["involvedObject"].update(kind=kind, name=name, namespace=namespace)
    payload["metadata"] = {"cluster": cluster} if cluster else {}
    return parse_flux_event(payload, received_at=datetime.now(UTC))


def test_flux_clusters_dirs_map_kustomizations_to_envs(tmp_path: Path) -> None:
    env_map = _env_map(make_repo("flux-helmrelease", tmp_path / "r"))
    assert sorted(b.describe() for b in env_map.bindings) == [
        "production: flux Kustomization flux-system/apps on cluster production (flux-path)",
        "staging: flux Kustomization flux-system/apps on cluster staging (flux-path)",
    ]
    assert env_map.resolve(_event("Kustomization", "apps", cluster="production")) == "production"
    assert env_map.resolve(_event("Kustomization", "apps", cluster="staging")) == "staging"
    # the same name in two clusters and no cluster on the event: ambiguous, so nothing
    assert env_map.resolve(_event("Kustomization", "apps")) is None
    assert env_map.resolve(_event("Kustomization", "apps", namespace="other", cluster="production")) is None


def test_a_kustomization_outside_the_env_paths_maps_by_its_directory(tmp_path: Path) -> None:
    repo = make_repo("flux-helmrelease", tmp_path / "r", history=False)
    (repo / "clusters" / "production" / "infra.yaml").write_text(
        "apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\n"
        "metadata: {name: infra, namespace: flux-system}\nspec: {path: ./infrastructure}\n")
    (repo / "clusters" / "dev").mkdir()
    (repo / "clusters" / "dev" / "all.yaml").write_text(
        "apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\n"
        "metadata: {name: everything}\nspec: {path: ./elsewhere}\n")
    import subprocess
    subprocess.run(["git", "-C", str(repo), "add", "-A"], check=True)
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "more"],
                   check=True)
    env_map = _env_map(repo)
    # production already has `apps` by path, so `infra` (another path) does not deploy it; dev is no env
    assert env_map.resolve(_event("Kustomization", "infra")) is None
    assert env_map.resolve(_event("Kustomization", "everything")) is None


def test_pinned_agents_and_argo_names(tmp_path: Path) -> None:
    repo = fleet_with_config(tmp_path / "f", production={"agent": PROD_AGENT},
                             staging={"agent": {"kind": "argocd", "name": "web-stg", "namespace": "argocd"}})
    env_map = _env_map(repo)
    argo = parse_argocd_event(load("argocd", "app-deployed"), received_at=datetime.now(UTC))
    named = {name: env_map.resolve(type(argo)(**{**argo.__dict__, "name": name}))
             for name in ("web-stg", "dev", "frontend-dev", "staging", "frontend-production", "guestbook")}
    assert named == {"web-stg": "staging", "dev": "dev", "frontend-dev": "dev", "staging": None,
                     "frontend-production": None, "guestbook": None}
    assert env_map.resolve(_event("Kustomization", "apps", cluster="prod-eu")) == "production"
    assert env_map.resolve(_event("Kustomization", "apps")) == "production"  # unlabeled events: unique name
    assert env_map.resolve(_event("Kustomization", "apps", cluster="dev-1")) is None


# --------------------------------------------------------------------------------------------- fuzz

_HEADER_TEXT = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=80)
_HEADERS = st.dictionaries(
    st.sampled_from(["X-Signature", "Authorization", "Content-Type", "Gotk-Component", "X-Other"]),
    _HEADER_TEXT, max_size=4)
_JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12)
_BODIES = st.one_of(
    st.binary(max_size=300),
    _JSONISH.map(lambda v: json.dumps(v).encode()),
    st.sampled_from(FLUX_FIXTURES).map(lambda n: json.dumps(load("flux", n)).encode()),
    st.sampled_from(ARGO_FIXTURES).map(lambda n: json.dumps(load("argocd", n)).encode()),
)


def test_fuzz_both_endpoints_never_5xx_and_never_change_state_unsigned(tmp_path: Path) -> None:
    repo = fleet_with_config(tmp_path / "f", production={"agent": PROD_AGENT})
    settings_ = make_settings(repo)
    bot = Opsbot(settings_)
    loop = asyncio.new_event_loop()
    processor = DeployProcessor(bot, settings_)
    intake = AgentIntake(processor, sweep_interval=0)
    app = web.Application()
    app.add_routes(agent_webhook_routes(bot, settings_, intake))
    client = TestClient(TestServer(app, host="127.0.0.1"), loop=loop)
    loop.run_until_complete(client.start_server())
    loop.run_until_complete(intake.start(background=False))
    signed: list[int] = []
    try:
        @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
        @given(path=st.sampled_from([FLUX_PATH, ARGOCD_PATH]), body=_BODIES, headers=_HEADERS,
               sign=st.booleans())
        def check(path: str, body: bytes, headers: dict[str, str], sign: bool) -> None:
            sent = dict(headers)
            if sign:
                if path == FLUX_PATH:
                    sent["X-Signature"] = flux_sign(body)
                else:
                    sent["Authorization"] = f"Bearer {ARGO_TOKEN}"
            before = len(bot.store.inbox_pending())

            async def go() -> int:
                resp = await client.post(path, data=body, headers=sent)
                await resp.read()
                await intake.process_queued()
                return resp.status

            status = loop.run_until_complete(go())
            assert status < 500
            if not sign:
                assert status == 401
                assert len(bot.store.inbox_pending()) == before
            else:
                signed.append(status)
            assert bot.store.outbox_due(datetime.now(UTC) + timedelta(days=1)) == []

        check()
    finally:
        loop.run_until_complete(client.close())
        loop.close()
        intake.close()
        bot.close()
    assert 202 in signed and 400 in signed  # the signed half reached the parser both ways


def test_outcome_of_every_argocd_fixture_is_a_verdict() -> None:
    outcomes = {n: parse_argocd_event(load("argocd", n), received_at=datetime.now(UTC)).outcome for n in ARGO_FIXTURES}
    assert outcomes == {"app-deployed": Outcome.SUCCEEDED, "app-sync-failed": Outcome.FAILED,
                        "app-health-degraded": Outcome.DEGRADED}


def test_post_keys_are_per_request_and_state() -> None:
    assert post_keys("R7", RequestState.DEPLOYED) == (
        "deploy:R7:deployed:reply", "deploy:R7:deployed:root", "deploy:R7:deployed:channel")
