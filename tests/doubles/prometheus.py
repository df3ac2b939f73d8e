"""A Prometheus HTTP API double: `GET`/`POST /api/v1/query`, answering in Prometheus' own JSON.

It does not evaluate PromQL. A test says what a query returns (`set`), or how it fails (`fail`,
`hang`); any other well-formed query returns an empty vector, which is what Prometheus answers for
a series that does not exist. What Prometheus refuses, it refuses: a missing or malformed `query`
(400 `bad_data`), an unparseable `time` (400 `bad_data`); and with a token set it stands for the
usual auth proxy in front of Prometheus (401 without the right `Authorization: Bearer`).

Shapes (prometheus.io/docs/prometheus/latest/querying/api/): `{"status": "success", "data":
{"resultType": "vector", "result": [{"metric": {...}, "value": [<unix time>, "<value>"]}]}}` and
`{"status": "error", "errorType": "bad_data"|"execution"|"timeout"|"unavailable", "error": "..."}`
with HTTP 400, 422 or 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.doubles.serving import serve_app_in_thread


@dataclass
class Answer:
    status: int = 200
    body: dict[str, Any] = field(default_factory=dict)
    hang: threading.Event | None = None  # answer only once this is set (for timeouts)


@dataclass
class Asked:
    query: str
    time: str
    authorization: str


def _balanced(query: str) -> bool:
    pairs = {")": "(", "]": "[", "}": "{"}
    stack: list[str] = []
    quote = ""
    for ch in query:
        if quote:
            if ch == quote:
                quote = ""
            continue
        if ch in "\"'`":
            quote = ch
        elif ch in "([{":
            stack.append(ch)
        elif ch in pairs and (not stack or stack.pop() != pairs[ch]):
            return False
    return not stack and not quote


def _error(status: int, kind: str, message: str) -> Answer:
    return Answer(status, {"status": "error", "errorType": kind, "error": message})


class PrometheusDouble:
    def __init__(self, token: str = "") -> None:
        self.token = token
        self.answers: dict[str, Answer] = {}
        self.asked: list[Asked] = []
        self.lock = threading.Lock()
        self._released: list[threading.Event] = []

    # ------------------------------------------------------------------ test controls
    def set(self, query: str, *values: str | float, result_type: str = "vector") -> None:
        """The query returns one sample per value (labels `{instance="i<n>"}`); none: an empty result."""
        now = time.time()
        if result_type == "scalar":
            result: Any = [now, str(values[0])]
        else:
            result = [{"metric": {"instance": f"i{n}"}, "value": [now, str(v)]} for n, v in enumerate(values)]
        with self.lock:
            self.answers[query] = Answer(200, {"status": "success", "data": {"resultType": result_type, "result": result}})

    def fail(self, query: str, status: int, kind: str, message: str) -> None:
        with self.lock:
            self.answers[query] = _error(status, kind, message)

    def hang(self, query: str) -> threading.Event:
        """The query gets no answer until the returned event is set (the client's timeout fires first)."""
        event = threading.Event()
        with self.lock:
            self.answers[query] = Answer(200, {"status": "success", "data": {"resultType": "vector", "result": []}},
                                         hang=event)  # fmt: skip
            self._released.append(event)
        return event

    def release_all(self) -> None:
        for event in self._released:
            event.set()

    # ------------------------------------------------------------------ the API
    def app(self) -> web.Application:
        application = web.Application()
        application.router.add_route("GET", "/api/v1/query", self._query)
        application.router.add_route("POST", "/api/v1/query", self._query)
        return application

    async def _query(self, request: web.Request) -> web.Response:
        if self.token and request.headers.get("Authorization", "") != f"Bearer {self.token}":
            return web.Response(status=401, text="Unauthorized\n")
        params = dict(request.query)
        if request.method == "POST":
            params.update({k: str(v) for k, v in (await request.post()).items()})
        query = params.get("query", "")
        at = params.get("time", "")
        with self.lock:
            self.asked.append(Asked(query, at, request.headers.get("Authorization", "")))
            answer = self.answers.get(query)
        if at:
            try:
                float(at)
            except ValueError:
                answer = _error(400, "bad_data", f'invalid parameter "time": cannot parse "{at}" to a valid timestamp')
        if not query.strip():
            answer = _error(400, "bad_data", 'invalid parameter "query": 1:1: parse error: no expression found in input')
        elif not _balanced(query):
            answer = _error(400, "bad_data", f'invalid parameter "query": 1:{len(query)}: parse error: unclosed left parenthesis')
        if answer is None:
            answer = Answer(200, {"status": "success", "data": {"resultType": "vector", "result": []}})
        if answer.hang is not None:
            await asyncio.get_running_loop().run_in_executor(None, answer.hang.wait, 60)
        return web.json_response(answer.body, status=answer.status)


@contextlib.contextmanager
def serve_prometheus(double: PrometheusDouble) -> Iterator[str]:
    """The double on 127.0.0.1; yields its base URL (what PROMETHEUS_URL would be)."""
    with serve_app_in_thread(double.app(), name="prometheus-double", shutdown_timeout=5) as served:
        try:
            yield served.url
        finally:
            double.release_all()  # a hanging answer must not hold the server's shutdown
