"""Plans in worker processes, so the process that answers Slack never waits for a plan's GIL.

Why processes: planning is CPU work in Python (YAML, diffs, schema checks); in threads of the
server process it holds the GIL and every ack waits behind it (issue 12: ack p99 6x its floor under
planning load). Here `opsbot serve` keeps a few `python -m opsbot.manifests.planpool` children;
a command thread sends one plan as a JSON line and blocks on the pipe (which releases the GIL)
until the child answers with the `Change` as JSON. JSON and not pickle: nothing that crosses the
pipe can execute (issue 9). Everything else a command does (RBAC, locks, the forge, the store,
notifications) stays where it was, so the one-plan-per-app/env and idempotency rules are unchanged.

A child that dies is restarted and the plan is reported as an internal error (never retried on
its own: the caller decides). `CommandError` and its kinds cross as themselves.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import queue
import subprocess
import sys
import threading
import typing
from typing import Any

from opsbot.core import model
from opsbot.core.model import Change, Intent
from opsbot.errors import CommandError, ConfigError, OpsbotError
from opsbot.manifests.codec import CodecError, decode, encode

log = logging.getLogger(__name__)

_SECRET_PREFIXES = ("SLACK_", "GITHUB_", "FLUX_", "ARGOCD_", "OPSBOT_")


def _refusal_class(name: str, module: str) -> type[CommandError] | None:
    """The `CommandError` class (or subclass, e.g. the planner's NothingToDo) a worker raised."""
    stack: list[type[CommandError]] = [CommandError]
    while stack:
        cls = stack.pop()
        if cls.__name__ == name and cls.__module__ == module:
            return cls
        stack.extend(cls.__subclasses__())
    return None


# ------------------------------------------------------------------------------------------ wire format


def _intent_classes() -> dict[str, type[Intent]]:
    out: dict[str, type[Intent]] = {}
    stack = list(Intent.__subclasses__())
    while stack:
        cls = stack.pop()
        if cls.__module__ == model.__name__:
            out[cls.__name__] = cls
        stack.extend(cls.__subclasses__())
    return out


def intent_to_json(intent: Intent) -> dict[str, Any]:
    return {"type": type(intent).__name__, "fields": encode(intent)}


def intent_from_json(data: Any) -> Intent:
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        raise CodecError("not an intent")
    cls = _intent_classes().get(data["type"])
    if cls is None:
        raise CodecError(f"unknown intent {data['type']}")
    intent = decode(cls, data.get("fields"))
    if not isinstance(intent, Intent):
        raise CodecError("not an intent")
    return intent


def change_to_json(change: Change) -> dict[str, Any]:
    out = {f.name: encode(getattr(change, f.name)) for f in dataclasses.fields(change) if f.name != "intent"}
    out["intent"] = intent_to_json(change.intent)
    return out


def change_from_json(data: Any) -> Change:
    if not isinstance(data, dict):
        raise CodecError("not a change")
    hints = typing.get_type_hints(Change)
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(Change):
        if f.name not in data:
            continue
        raw = data[f.name]
        fields[f.name] = intent_from_json(raw) if f.name == "intent" else decode(hints[f.name], raw)
    try:
        return Change(**fields)
    except TypeError as exc:
        raise CodecError(str(exc)) from None


# ------------------------------------------------------------------------------------------ the parent


class PlanWorkerError(OpsbotError):
    """A plan worker died or answered something that is not a plan: an internal error."""


class _Worker:
    def __init__(self, repo: str, options: dict[str, Any]) -> None:
        # A worker reads the local repo only: no tokens or webhook secrets in its environment.
        env = {k: v for k, v in os.environ.items() if not k.startswith(_SECRET_PREFIXES)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "opsbot.manifests.planpool", repo, json.dumps(options)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            text=True,
            encoding="utf-8",
            bufsize=1,
        )

    def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        except (OSError, ValueError) as exc:
            raise PlanWorkerError(f"plan worker failed: {type(exc).__name__}") from None
        if not line:
            raise PlanWorkerError(f"plan worker exited (code {self.proc.poll()})")
        try:
            answer = json.loads(line)
        except ValueError:
            raise PlanWorkerError("plan worker answered something that is not JSON") from None
        if not isinstance(answer, dict):
            raise PlanWorkerError("plan worker answered something that is not an object")
        return answer

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


class PlanPool:
    """N plan workers for one repo; `plan` blocks the calling thread (not the GIL) until one answers."""

    def __init__(
        self, repo: str, size: int, *, kubernetes_version: str, max_replicas: int, fetch_charts: bool = False
    ) -> None:
        self.repo = repo
        self.size = size
        self.options = {
            "kubernetes_version": kubernetes_version,
            "max_replicas": max_replicas,
            "fetch_charts": fetch_charts,
        }
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._all: list[_Worker] = []
        self._lock = threading.Lock()
        self._closed = False
        for _ in range(size):
            self._add()

    def _add(self) -> None:
        worker = _Worker(self.repo, self.options)
        with self._lock:
            self._all.append(worker)
        self._idle.put(worker)

    def plan(self, ref: str, intent: Intent) -> Change:
        if self._closed:
            raise PlanWorkerError("the plan pool is closed")
        worker = self._idle.get()
        healthy = True
        try:
            answer = worker.ask({"ref": ref, "intent": intent_to_json(intent)})
        except PlanWorkerError:
            healthy = False
            raise
        finally:
            if healthy and worker.alive():
                self._idle.put(worker)
            else:
                with self._lock:
                    if worker in self._all:
                        self._all.remove(worker)
                worker.close()
                if not self._closed:
                    self._add()
        if "change" in answer:
            try:
                return change_from_json(answer["change"])
            except CodecError as exc:
                raise PlanWorkerError(f"plan worker answered a malformed change: {exc}") from None
        message = str(answer.get("message", ""))
        if answer.get("error") == "ConfigError":
            raise ConfigError(message)
        refusal = _refusal_class(str(answer.get("error")), str(answer.get("module")))
        if refusal is not None:
            raise refusal(message, hint=str(answer.get("hint", "")))
        raise PlanWorkerError(f"plan failed in a worker: {answer.get('error')}")

    def close(self) -> None:
        self._closed = True
        with self._lock:
            workers, self._all = self._all, []
        for w in workers:
            w.close()


class PooledPlanner:
    """What `planner_for` hands out when a pool runs the plans: `plan` goes to a worker, while the
    reads other commands make (`index`, `config`) stay with a local planner, built on first use."""

    def __init__(self, pool: PlanPool, ref: str, local: typing.Callable[[], Any]) -> None:
        self.pool = pool
        self.ref = ref
        self._local = local
        self._planner: Any = None

    @property
    def local(self) -> Any:
        if self._planner is None:
            self._planner = self._local()
        return self._planner

    @property
    def index(self) -> Any:
        return self.local.index

    @property
    def config(self) -> Any:
        return self.local.config

    @property
    def repo(self) -> Any:
        return self.local.repo

    def plan(self, intent: Intent) -> Change:
        return self.pool.plan(self.ref, intent)


# ------------------------------------------------------------------------------------------ the child


def worker_main(repo_path: str, options: dict[str, Any]) -> int:
    """Answer one JSON plan request per stdin line on stdout, until stdin closes."""
    from opsbot.manifests.gitrepo import GitRepo
    from opsbot.manifests.planner import Planner, PlanOptions

    out = sys.stdout
    sys.stdout = sys.stderr  # nothing but answers on the pipe
    repo = GitRepo(repo_path)
    opts = PlanOptions(
        str(options["kubernetes_version"]),
        int(options["max_replicas"]),
        fetch_charts=bool(options.get("fetch_charts", False)),
    )
    planners: dict[tuple[str, str], Planner] = {}
    try:
        for line in sys.stdin:
            answer: dict[str, Any]
            try:
                request = json.loads(line)
                ref = str(request["ref"])
                intent = intent_from_json(request["intent"])
                key = (ref, repo.resolve(ref))
                planner = planners.get(key)
                if planner is None:
                    planner = Planner(repo, ref, opts)
                    if len(planners) > 8:
                        planners.pop(next(iter(planners)))
                    planners[key] = planner
                answer = {"change": change_to_json(planner.plan(intent))}
                planner.index.persist()
            except CommandError as exc:
                answer = {
                    "error": type(exc).__name__,
                    "module": type(exc).__module__,
                    "message": exc.message,
                    "hint": exc.hint,
                }
            except ConfigError as exc:
                answer = {"error": "ConfigError", "message": str(exc)}
            except Exception as exc:
                log.exception("plan failed in the worker")
                answer = {"error": type(exc).__name__}
            out.write(json.dumps(answer) + "\n")
            out.flush()
    finally:
        repo.close()
    return 0


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1], json.loads(sys.argv[2])))
