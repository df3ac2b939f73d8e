"""Prometheus metrics for `GET /metrics`: what a platform team alerts on when opsbot runs for real.

Why a registry of our own (not prometheus-client's global default): the process-wide default also
collects whatever other libraries register, and tests that build several bots in one process would
see each other's counts. A `Metrics` object owns its registry; the module keeps one default
instance (`DEFAULT`) that the running process shares, and tests build fresh ones.

Why the core does not import this module: the dispatcher and the request lifecycle report through
plain callbacks (`Dispatcher(observe=...)`, `Opsbot.on_transition`), and `opsbot.app` wires those to
`observe_command` / `observe_transition` here. Adapters (webhook intake, the Slack and GitHub
clients) call `record_webhook_event`, `record_api_error` and `record_api_retry` directly, on the
bot's instance (`Opsbot.metrics`). The deploy processor (`opsbot.intake.deploys`) moves requests to
deployed with the store alone, not through the transition hooks, so it calls
`record_merge_to_deployed` itself, once per real move (never on a replay).

Label values are normalised and clipped (`_label`), because several of them come from the outside
(an API name, an error kind) and an unbounded label set would grow the scrape without limit.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import choose_encoder

from opsbot.core.model import Request
from opsbot.core.results import Failure, NoChange, Proposed, Result

__all__ = [
    "COMMAND_OUTCOMES",
    "DEFAULT",
    "MERGE_TO_DEPLOYED_BUCKETS",
    "Metrics",
    "command_outcome",
    "observe_command",
    "observe_transition",
    "record_api_error",
    "record_api_retry",
    "record_command",
    "record_merge_to_deployed",
    "record_pr_merged",
    "record_pr_opened",
    "record_webhook_event",
    "render",
]

#: The outcomes a command can have. `failure`: the command was refused with a message for the user
#: (bad input, the validation gate, a blocked merge); `error`: opsbot's own fault (a reference id was
#: given, details are in the log); `denied`: RBAC said no; `no_change`: already so, no PR.
COMMAND_OUTCOMES = ("ok", "no_change", "error", "denied", "failure")

#: From a quick Flux reconcile (seconds) to a slow Argo CD sync window or a long rollout (an hour).
MERGE_TO_DEPLOYED_BUCKETS = (5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0)

_LABEL_CHARS = re.compile(r"[^a-z0-9_.-]+")
_LABEL_MAX = 40


def _label(value: object) -> str:
    """A bounded, scrape-safe label value: lower case, `[a-z0-9_.-]`, at most 40 characters."""
    text = _LABEL_CHARS.sub("_", str(value).strip().lower()).strip("_")
    return text[:_LABEL_MAX] or "unknown"


def command_outcome(result: Result) -> str:
    """Which of COMMAND_OUTCOMES a dispatcher result is."""
    if isinstance(result, Failure):
        if result.denied:
            return "denied"
        return "error" if result.reference else "failure"
    if isinstance(result, NoChange):
        return "no_change"
    return "ok"


class Metrics:
    """One set of opsbot's series in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.commands = Counter(
            "opsbot_commands",
            "Commands handled, by command name and outcome (ok, no_change, failure, denied, error).",
            ["command", "outcome"],
            registry=self.registry,
        )
        self.prs_opened = Counter(
            "opsbot_prs_opened",
            "Pull requests opened by opsbot (not counting an already-open PR).",
            registry=self.registry,
        )
        self.prs_merged = Counter(
            "opsbot_prs_merged",
            "Pull requests of opsbot requests merged (in chat, on the CLI or on the forge).",
            registry=self.registry,
        )
        self.merge_to_deployed = Histogram(
            "opsbot_merge_to_deployed_seconds",
            "Time from a request's merge to the GitOps agent reporting it live.",
            buckets=MERGE_TO_DEPLOYED_BUCKETS,
            registry=self.registry,
        )
        self.webhook_events = Counter(
            "opsbot_webhook_events",
            "Inbound webhook deliveries, by source (github, flux, argocd, slack) and outcome.",
            ["source", "outcome"],
            registry=self.registry,
        )
        self.api_errors = Counter(
            "opsbot_api_errors",
            "Errors from outbound APIs (slack, github, kubernetes), by kind (rate_limited, server_error, ...).",
            ["api", "kind"],
            registry=self.registry,
        )
        self.api_retries = Counter(
            "opsbot_api_retries",
            "Retries of outbound API calls after a temporary failure.",
            ["api"],
            registry=self.registry,
        )

    # ------------------------------------------------------------------ recording

    def record_command(self, name: str, outcome: str) -> None:
        if outcome not in COMMAND_OUTCOMES:
            raise ValueError(f"unknown command outcome {outcome!r} (one of {', '.join(COMMAND_OUTCOMES)})")
        self.commands.labels(command=_label(name), outcome=outcome).inc()

    def record_pr_opened(self) -> None:
        self.prs_opened.inc()

    def record_pr_merged(self) -> None:
        self.prs_merged.inc()

    def record_merge_to_deployed(self, seconds: float) -> None:
        # A clock step between two hosts can make "deployed" look earlier than "merged": record zero
        # rather than dropping the observation, so the count still matches the deploys.
        self.merge_to_deployed.observe(max(0.0, float(seconds)))

    def record_webhook_event(self, source: str, outcome: str) -> None:
        self.webhook_events.labels(source=_label(source), outcome=_label(outcome)).inc()

    def record_api_error(self, api: str, kind: str) -> None:
        self.api_errors.labels(api=_label(api), kind=_label(kind)).inc()

    def record_api_retry(self, api: str) -> None:
        self.api_retries.labels(api=_label(api)).inc()

    # ------------------------------------------------------------------ hooks for app.py

    def observe_command(self, name: str, result: Result) -> None:
        """The dispatcher's observer: one count per command, and a PR opened when one was."""
        self.record_command(name, command_outcome(result))
        if isinstance(result, Proposed) and result.pr is not None and not result.existing:
            self.record_pr_opened()

    def observe_transition(self, request: Request, event: str, facts: dict[str, Any]) -> None:
        """An `Opsbot.on_transition` hook: merges, and merge → deployed time."""
        if event == "merged":
            self.record_pr_merged()
        elif event == "deployed":
            seconds = _merge_to_deployed(request, facts)
            if seconds is not None:
                self.record_merge_to_deployed(seconds)

    # ------------------------------------------------------------------ exposition

    def render(self, accept: str = "") -> tuple[bytes, str]:
        """The exposition body and its Content-Type; OpenMetrics when the scraper asks for it."""
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type


def _merge_to_deployed(request: Request, facts: dict[str, Any]) -> float | None:
    """Seconds from merge to live: the notifier's own figure (`since_merge`, as the thread reply
    shows it) when it gave one, else the request's stored merge and deploy times."""
    given = facts.get("since_merge")
    if isinstance(given, timedelta):
        return given.total_seconds()
    if isinstance(given, int | float) and not isinstance(given, bool):
        return float(given)
    if request.merged_at is None or request.deployed_at is None:
        return None
    return (request.deployed_at - request.merged_at).total_seconds()


#: The process's metrics: what `opsbot serve` exposes on /metrics.
DEFAULT = Metrics()


def record_command(name: str, outcome: str) -> None:
    DEFAULT.record_command(name, outcome)


def record_pr_opened() -> None:
    DEFAULT.record_pr_opened()


def record_pr_merged() -> None:
    DEFAULT.record_pr_merged()


def record_merge_to_deployed(seconds: float) -> None:
    DEFAULT.record_merge_to_deployed(seconds)


def record_webhook_event(source: str, outcome: str) -> None:
    DEFAULT.record_webhook_event(source, outcome)


def record_api_error(api: str, kind: str) -> None:
    DEFAULT.record_api_error(api, kind)


def record_api_retry(api: str) -> None:
    DEFAULT.record_api_retry(api)


def observe_command(name: str, result: Result) -> None:
    DEFAULT.observe_command(name, result)


def observe_transition(request: Request, event: str, facts: dict[str, Any]) -> None:
    DEFAULT.observe_transition(request, event, facts)


def render(accept: str = "") -> tuple[bytes, str]:
    return DEFAULT.render(accept)
