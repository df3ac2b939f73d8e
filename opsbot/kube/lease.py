"""Leader election on a `coordination.k8s.io/v1` Lease, so that of several replicas exactly one
does a job.

Why a module of its own: nothing in it is about deploys; watch mode uses it today, and any other
singleton job can use it the same way.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError as Urllib3HTTPError

from opsbot.core.fields import as_map, as_str
from opsbot.core.model import utcnow
from opsbot.errors import OpsbotError
from opsbot.kube.client import describe

log = logging.getLogger(__name__)

__all__ = ["LeaseElector", "identity"]


def identity() -> str:
    """Unique per process: two processes on one host (or a restarted pod) never share leadership."""
    host = os.environ.get("POD_NAME") or socket.gethostname() or "opsbot"
    return f"{host}-{uuid.uuid4().hex[:8]}"


class LeaseElector:
    """Leader election on a `coordination.k8s.io/v1` Lease, following client-go's rules.

    Why these rules: expiry is judged on *our* clock from the moment we last saw the lease
    record change (not from its `renewTime`), so clock skew between replicas cannot make two of
    them leader; every write carries the `resourceVersion` we read, so of two candidates racing
    for an expired lease exactly one write succeeds and the other gets 409 and stays follower.
    A leader that cannot renew gives up after `renew_deadline`, before anyone else may take over.

    The Lease is handled as plain JSON (see `_request`).
    """

    def __init__(
        self,
        api: client.ApiClient,
        *,
        namespace: str,
        name: str,
        identity: str,
        lease_duration: int = 15,
        renew_deadline: float | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        if not identity:
            raise OpsbotError("leader election needs a non-empty identity (e.g. the pod name)")
        self._client = api
        self.namespace, self.name, self.identity = namespace, name, identity
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline if renew_deadline is not None else lease_duration * 2 / 3
        self._clock = clock
        self._observed: tuple[Any, ...] | None = None
        self._observed_at: datetime | None = None
        self._renewed_at: datetime | None = None
        self.is_leader = False

    def try_acquire_or_renew(self) -> bool:
        now = self._clock()
        try:
            lease = self._read()
        except ApiException as exc:
            if exc.status == 404:
                return self._create(now)
            return self._failed(now, exc)
        except (Urllib3HTTPError, OSError, ValueError) as exc:
            return self._failed(now, exc)

        spec = dict(as_map(lease.get("spec")))
        holder = as_str(spec.get("holderIdentity"))
        record = _record(spec)
        if record != self._observed:
            self._observed, self._observed_at = record, now
        duration = spec.get("leaseDurationSeconds")
        if not isinstance(duration, int) or duration <= 0:
            duration = self.lease_duration
        observed_at = self._observed_at or now
        if holder and holder != self.identity and now < observed_at + timedelta(seconds=duration):
            self.is_leader = False
            return False

        if holder != self.identity:
            spec["acquireTime"] = _micro_time(now)
            transitions = spec.get("leaseTransitions")
            spec["leaseTransitions"] = (transitions if isinstance(transitions, int) else 0) + 1
        spec["holderIdentity"] = self.identity
        spec["leaseDurationSeconds"] = self.lease_duration
        spec["renewTime"] = _micro_time(now)
        lease["spec"] = spec
        try:
            updated = self._write(lease)
        except ApiException as exc:
            if exc.status == 409:  # someone else wrote since our read: they won
                self.is_leader = False
                return False
            return self._failed(now, exc)
        except (Urllib3HTTPError, OSError, ValueError) as exc:
            return self._failed(now, exc)
        return self._won(updated, now)

    def release(self) -> None:
        """Hand the lease back so another replica takes over at once instead of after expiry."""
        if not self.is_leader:
            return
        self.is_leader = False
        now = _micro_time(self._clock())
        try:
            lease = self._read()
            spec = dict(as_map(lease.get("spec")))
            if spec.get("holderIdentity") != self.identity:
                return
            spec.pop("holderIdentity", None)
            spec.update(leaseDurationSeconds=1, renewTime=now, acquireTime=now)
            lease["spec"] = spec
            self._write(lease)
        except (ApiException, Urllib3HTTPError, OSError, ValueError) as exc:
            log.warning("could not release lease %s/%s: %s", self.namespace, self.name, describe(exc))

    def run(
        self,
        stop: threading.Event,
        work: Callable[[threading.Event], None],
        *,
        retry_period: float = 2.0,
    ) -> None:
        """Run `work(child_stop)` while leader; stop it when leadership is lost or `stop` is set.

        If `work` raises, leadership is released and the error re-raised here, so a permanent
        failure (a refused token) ends the bot's watch loop visibly instead of silently.
        """
        worker: threading.Thread | None = None
        child = threading.Event()
        errors: list[BaseException] = []

        def target(child_stop: threading.Event) -> None:
            try:
                work(child_stop)
            except BaseException as exc:
                errors.append(exc)

        try:
            while not stop.is_set() and not errors:
                if worker is not None and not worker.is_alive():
                    worker = None  # the work returned on its own; start it again while we lead
                leading = self.try_acquire_or_renew()
                if leading and worker is None:
                    log.info("leading lease %s/%s as %s", self.namespace, self.name, self.identity)
                    child = threading.Event()
                    worker = threading.Thread(target=target, args=(child,), name="leader-work")
                    worker.start()
                elif not leading and worker is not None:
                    log.warning("lost lease %s/%s; stopping work", self.namespace, self.name)
                    child.set()
                    worker.join()
                    worker = None
                if stop.wait(retry_period) or errors:
                    break
        finally:
            child.set()
            if worker is not None:
                worker.join()
            self.release()
        if errors:
            raise errors[0]

    # ------------------------------------------------------------------------------ internals

    _LEASES = "/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"

    def _read(self) -> dict[str, Any]:
        return self._request("GET", self._LEASES + "/{name}")

    def _write(self, lease: dict[str, Any]) -> dict[str, Any]:
        return self._request("PUT", self._LEASES + "/{name}", lease)

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """One Lease call with a plain JSON body.

        The generated `*_namespaced_lease` methods coerce a body into a `V1Lease` and write its
        times with `isoformat()`, which drops the fraction when the microseconds are 0; the API
        server then answers 400 (MicroTime needs exactly six digits).
        """
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        request = self._client.param_serialize(
            method=method,
            resource_path=path,
            path_params={"namespace": self.namespace, "name": self.name},
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self._client.call_api(*request, _request_timeout=(5, 10))
        raw = response.read()
        if not 200 <= response.status <= 299:
            raise ApiException.from_response(http_resp=response, body=None, data=None)
        data = json.loads(raw or b"null")
        if not isinstance(data, dict):
            raise ValueError(f"the API server returned a {type(data).__name__} for a lease, not an object")
        return data

    def _create(self, now: datetime) -> bool:
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": self.lease_duration,
                "acquireTime": _micro_time(now),
                "renewTime": _micro_time(now),
                "leaseTransitions": 0,
            },
        }
        try:
            created = self._request("POST", self._LEASES, body)
        except ApiException as exc:
            if exc.status == 409:  # another replica created it first
                self.is_leader = False
                return False
            return self._failed(now, exc)
        except (Urllib3HTTPError, OSError, ValueError) as exc:
            return self._failed(now, exc)
        return self._won(created, now)

    def _won(self, lease: Mapping[str, Any], now: datetime) -> bool:
        self._observed = _record(as_map(lease.get("spec")))
        self._observed_at = now
        self._renewed_at = now
        self.is_leader = True
        return True

    def _failed(self, now: datetime, exc: BaseException) -> bool:
        still = (
            self.is_leader
            and self._renewed_at is not None
            and now < self._renewed_at + timedelta(seconds=self.renew_deadline)
        )
        state = "still leader" if still else "not leader"
        log.warning("lease %s/%s: %s; %s", self.namespace, self.name, describe(exc), state)
        self.is_leader = still
        return still



def _record(spec: Mapping[str, Any]) -> tuple[Any, ...]:
    """The parts of a Lease that change on every renewal or takeover (client-go's record)."""
    return (
        as_str(spec.get("holderIdentity")),
        spec.get("renewTime"),
        spec.get("acquireTime"),
        spec.get("leaseTransitions"),
        spec.get("leaseDurationSeconds"),
    )


def _micro_time(value: datetime) -> str:
    """MicroTime as the API server parses it: RFC 3339 with exactly six fractional digits."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

