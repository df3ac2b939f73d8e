"""Fixtures for the Kubernetes API double (register with `-p tests.plugins.kube`).

Why a plugin: the watch tests, the `status` command's tests and later end-to-end tests need the
same running double, a client pointed at it, and a clock that leader election can be moved on
without waiting.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from kubernetes import client

from tests.doubles.kube import KubeDouble, RunningKube, serve_in_thread

KUBE_TOKEN = "kube-double-token"


@dataclass
class KubeClock:
    """A settable UTC clock: lease expiry is tested by moving it, never by sleeping."""

    now: datetime = field(default_factory=lambda: datetime(2026, 1, 15, 10, 0, tzinfo=UTC))

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def kube_client(url: str, token: str = KUBE_TOKEN) -> client.ApiClient:
    """An ApiClient for the double: plain HTTP on 127.0.0.1, Bearer token, no kubeconfig."""
    cfg = client.Configuration(host=url)
    cfg.api_key = {"authorization": token}
    cfg.api_key_prefix = {"authorization": "Bearer"}
    return client.ApiClient(cfg)


@pytest.fixture
def kube_double() -> KubeDouble:
    return KubeDouble(token=KUBE_TOKEN)


@pytest.fixture
def kube_server(kube_double: KubeDouble) -> Iterator[RunningKube]:
    with serve_in_thread(kube_double) as running:
        yield running


@pytest.fixture
def make_kube_client(kube_server: RunningKube) -> Iterator[Callable[..., client.ApiClient]]:
    made: list[client.ApiClient] = []

    def make(token: str = KUBE_TOKEN) -> client.ApiClient:
        api = kube_client(kube_server.url, token)
        made.append(api)
        return api

    yield make
    for api in made:
        api.close()


@pytest.fixture
def kube_api(make_kube_client: Callable[..., client.ApiClient]) -> client.ApiClient:
    return make_kube_client()


@pytest.fixture
def kube_clock() -> KubeClock:
    return KubeClock()
