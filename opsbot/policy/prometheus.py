"""The Prometheus HTTP API adapter for metric gates: `GET /api/v1/query`, nothing else.

urllib from the standard library (no new dependency, no aiohttp outside adapters). Every failure
becomes an *unknown* gate result carrying the error, never a pass: when opsbot cannot prove a gate
holds, it says so and the merge waits.
"""

from __future__ import annotations

import json
import math
import socket
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime
from typing import Any

from opsbot.policy.model import Gate, GateResult

#: Longest error text shown in chat or a commit status.
MAX_ERROR = 300


class Prometheus:
    def __init__(self, url: str, token: str = "", timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self._token = token
        self.timeout = timeout

    def evaluate(self, gate: Gate, now: datetime) -> GateResult:
        query = urllib.parse.urlencode({"query": gate.query, "time": f"{now.timestamp():.3f}"})
        request = urllib.request.Request(f"{self.url}/api/v1/query?{query}", method="GET")
        request.add_header("Accept", "application/json")
        if self._token:
            request.add_header("Authorization", f"Bearer {self._token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                body = response.read(1_000_001)
                status = response.status
        except urllib.error.HTTPError as exc:
            body = exc.read(1_000_001)
            status = exc.code
        except TimeoutError:
            return GateResult(gate, "unknown", f"Prometheus did not answer within {self.timeout:g}s")
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, (TimeoutError, socket.timeout)):
                return GateResult(gate, "unknown", f"Prometheus did not answer within {self.timeout:g}s")
            return GateResult(gate, "unknown", f"Prometheus is unreachable: {_clip(str(reason))}")
        except OSError as exc:
            return GateResult(gate, "unknown", f"Prometheus is unreachable: {_clip(str(exc))}")
        return judge(gate, status, body)


def judge(gate: Gate, status: int, body: bytes) -> GateResult:
    """Read one `/api/v1/query` answer: pass, fail (empty result) or unknown (anything else)."""
    try:
        doc = json.loads(body)
    except ValueError:
        return GateResult(gate, "unknown", f"Prometheus answered HTTP {status} without JSON")
    if not isinstance(doc, dict):
        return GateResult(gate, "unknown", f"Prometheus answered HTTP {status} with unexpected JSON")
    if doc.get("status") != "success" or status != 200:
        kind = doc.get("errorType") or "error"
        error = doc.get("error") or f"HTTP {status}"
        return GateResult(gate, "unknown", f"Prometheus refused the query ({kind}): {_clip(str(error))}")
    data = doc.get("data")
    if not isinstance(data, dict):
        return GateResult(gate, "unknown", "Prometheus answered without `data`")
    kind = data.get("resultType")
    result = data.get("result")
    values: list[Any]
    if kind == "vector" and isinstance(result, list):
        values = [s.get("value", [None, None])[1] if isinstance(s, dict) else None for s in result]
    elif kind == "scalar" and isinstance(result, list) and len(result) == 2:
        values = [result[1]]
    elif kind == "matrix" and isinstance(result, list):
        values = [(s.get("values") or [[None, None]])[-1][1] if isinstance(s, dict) else None for s in result]
    else:
        return GateResult(gate, "unknown", f"Prometheus answered a {kind or 'malformed'} result; a gate needs a vector")
    if not values:
        return GateResult(gate, "fail", "the query returned no samples")
    falsy = 0
    for value in values:
        try:
            number = float(value)
        except (TypeError, ValueError):
            return GateResult(gate, "unknown", f"Prometheus returned a sample that is not a number: {value!r}")
        if number == 0 or math.isnan(number):
            falsy += 1
    if falsy:
        return GateResult(gate, "fail", f"{falsy} of {len(values)} sample(s) are 0 or NaN")
    return GateResult(gate, "pass", f"{len(values)} sample(s), all true")


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_ERROR else text[: MAX_ERROR - 1] + "…"
