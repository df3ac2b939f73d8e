"""List/watch of one resource kind, following the API server's contract.

Why: the official `kubernetes` client is synchronous (urllib3), so each watched resource runs in a
thread of its own. Events reach the caller through a plain callback, called in that thread; an
asyncio consumer should hand them over with `loop.call_soon_threadsafe`. The loop follows the
API server's list/watch contract (https://kubernetes.io/docs/reference/using-api/api-concepts/):
list once, remember `metadata.resourceVersion`, watch from it with bookmarks on, advance on every
event and bookmark, and relist when the server answers 410 Gone. It emits an event only when an
object's (revision, outcome, reason, message) changes, so a relist or a status-only update does
not notify twice.

What an object's status *means* is not decided here: the caller passes the translation
(`opsbot.intake.agent_events.event_from_object` for Flux, Argo CD and Cluster API objects).
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError as Urllib3HTTPError

from opsbot.core.fields import as_list, as_map, as_str
from opsbot.core.model import DeployEvent, utcnow
from opsbot.errors import PermanentError
from opsbot.kube.client import describe

log = logging.getLogger(__name__)

__all__ = [
    "Backoff",
    "ResourceWatcher",
    "Translate",
    "WatchAuthError",
    "WatchedResource",
    "run_watchers",
]


@dataclass(frozen=True)
class WatchedResource:
    group: str
    version: str
    plural: str
    kind: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"

    def __str__(self) -> str:
        return f"{self.plural}.{self.group}"


class Translate(Protocol):
    """What an object's status says as a deploy event, or None while it says nothing yet."""

    def __call__(
        self, resource: WatchedResource, obj: Mapping[str, Any], *, now: datetime, cluster: str = ""
    ) -> DeployEvent | None: ...


class WatchAuthError(PermanentError):
    """The API server refused our credentials (401/403): retrying cannot help, a person must act."""


class _Expired(Exception):
    """410 Gone: the resourceVersion we hold is older than the server's history; relist."""


class _StreamError(Exception):
    """The watch stream carried an ERROR event other than 410, or a line that is not an event."""


class Backoff:
    """Exponential delay with jitter, so a failing API server is not hammered by every replica."""

    def __init__(
        self,
        initial: float = 0.5,
        maximum: float = 30.0,
        factor: float = 2.0,
        jitter: float = 0.2,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.initial, self.maximum, self.factor, self.jitter, self._rng = (
            initial,
            maximum,
            factor,
            jitter,
            rng,
        )
        self._next = initial

    def next(self) -> float:
        delay = min(self._next, self.maximum)
        self._next = min(self._next * self.factor, self.maximum)
        return delay * (1 - self.jitter * self._rng())

    def reset(self) -> None:
        self._next = self.initial


Fingerprint = tuple[str, str, str, str]


class ResourceWatcher:
    """List-then-watch one resource kind and call `on_event` for every change of deploy state.

    `translate` says what an object's status means (None: nothing yet); the watcher only tracks
    which (revision, outcome, reason, message) it last delivered per object.

    `run(stop)` blocks until `stop` is set (a watchdog aborts the blocked read, so stopping does
    not wait for the next event), or raises `WatchAuthError` on 401/403. Every other failure is
    logged and retried after a backoff that `stop` interrupts. A watch that delivers nothing
    also waits a backoff before the next one, so a server that closes streams at once cannot
    make the loop spin.
    """

    def __init__(
        self,
        api: client.ApiClient,
        resource: WatchedResource,
        on_event: Callable[[DeployEvent], None],
        *,
        translate: Translate,
        namespace: str | None = None,
        cluster: str = "",
        clock: Callable[[], datetime] = utcnow,
        backoff: Backoff | None = None,
        timeout_seconds: int = 300,
        request_timeout: tuple[float, float] | None = None,
        stop_poll_seconds: float = 0.2,
    ) -> None:
        self._api = client.CustomObjectsApi(api)
        self.resource = resource
        self._on_event = on_event
        self._translate = translate
        self.namespace = namespace
        self.cluster = cluster
        self._clock = clock
        self._backoff = backoff or Backoff()
        self._timeout_seconds = timeout_seconds
        # The read timeout outlives the server-side timeout, so it only fires on a dead connection.
        self._request_timeout = request_timeout or (10.0, timeout_seconds + 30.0)
        self._stop_poll = stop_poll_seconds
        self._known: dict[tuple[str, str], Fingerprint] = {}
        self._response: Any = None
        self._response_lock = threading.Lock()
        self.resource_version: str | None = None
        self.lists = 0
        self._missing_logged = False

    # ------------------------------------------------------------------------------ loop

    def run(self, stop: threading.Event) -> None:
        done = threading.Event()
        watchdog = threading.Thread(
            target=self._abort_on_stop,
            args=(stop, done),
            name=f"watchdog-{self.resource.plural}",
            daemon=True,
        )
        watchdog.start()
        try:
            self._loop(stop)
        finally:
            done.set()
            watchdog.join()

    def _loop(self, stop: threading.Event) -> None:
        expired_in_a_row = 0
        while not stop.is_set():
            delay = 0.0
            try:
                if self.resource_version is None:
                    self._relist()
                if stop.is_set():
                    break
                if self._watch_once(stop):
                    self._backoff.reset()
                    expired_in_a_row = 0
                else:
                    delay = self._backoff.next()
            except _Expired:
                # The first 410 relists at once (the normal case after a long disconnect); a
                # second one in a row means something is wrong, so back off.
                self.resource_version = None
                expired_in_a_row += 1
                delay = self._backoff.next() if expired_in_a_row > 1 else 0.0
                log.info("watch of %s expired (410 Gone); relisting", self.resource)
            except ApiException as exc:
                if exc.status in (401, 403):
                    raise WatchAuthError(_auth_message(self.resource, exc.status, self.namespace)) from None
                if exc.status == 410:
                    self.resource_version = None
                    expired_in_a_row += 1
                    delay = self._backoff.next() if expired_in_a_row > 1 else 0.0
                elif exc.status == 404:
                    # The CRD is not installed (a Flux-only cluster has no Applications): say so
                    # once, then look again now and then in case it gets installed.
                    delay = self._backoff.maximum
                    level = logging.DEBUG if self._missing_logged else logging.WARNING
                    self._missing_logged = True
                    log.log(level, "%s is not served by this cluster (404); looking again every %.0fs",
                            self.resource, delay)
                else:
                    delay = self._backoff.next()
                    log.warning(
                        "watch of %s failed: %s; retrying in %.1fs", self.resource, describe(exc), delay
                    )
            except WatchAuthError:
                raise
            except (Urllib3HTTPError, OSError, _StreamError, ValueError) as exc:
                if stop.is_set():
                    break
                delay = self._backoff.next()
                log.warning("watch of %s failed: %s; retrying in %.1fs", self.resource, describe(exc), delay)
            except Exception:
                # Unexpected (a client bug, a payload the client chokes on): keep watching, slowly.
                if stop.is_set():
                    break
                delay = self._backoff.next()
                log.exception("watch of %s failed unexpectedly; retrying in %.1fs", self.resource, delay)
            if delay and stop.wait(delay):
                break

    def _abort_on_stop(self, stop: threading.Event, done: threading.Event) -> None:
        while not done.is_set():
            if stop.wait(self._stop_poll):
                self._abort()
                return

    def _abort(self) -> None:
        with self._response_lock:
            resp = self._response
        if resp is None:
            return
        try:
            # Half-closes the socket: the reader thread wakes up with end-of-stream and closes
            # the response itself (closing it from here could race with its read).
            resp.shutdown()
        except Exception:
            with contextlib.suppress(Exception):
                resp.close()

    # ------------------------------------------------------------------------------ list / watch

    def _call(self, **kwargs: Any) -> Any:
        r = self.resource
        if self.namespace:
            return self._api.list_namespaced_custom_object(
                r.group, r.version, self.namespace, r.plural, **kwargs
            )
        return self._api.list_cluster_custom_object(r.group, r.version, r.plural, **kwargs)

    def _relist(self) -> None:
        items: list[Any] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"limit": 500, "_request_timeout": (self._request_timeout[0], 60.0)}
            if token:
                kwargs["_continue"] = token
            page = self._call(**kwargs)
            if not isinstance(page, dict):
                raise _StreamError(f"list of {self.resource} returned {type(page).__name__}, not an object")
            items.extend(as_list(page.get("items")))
            meta = as_map(page.get("metadata"))
            token = as_str(meta.get("continue")) or None
            if token is None:
                rv = as_str(meta.get("resourceVersion"))
                break
        self.lists += 1
        seen: set[tuple[str, str]] = set()
        for obj in items:
            if isinstance(obj, dict):
                seen.add(self._observe(obj))
        for key in set(self._known) - seen:
            del self._known[key]  # deleted while we were not watching
        self.resource_version = rv or None
        if not rv:
            raise _StreamError(f"list of {self.resource} has no metadata.resourceVersion")

    def _watch_once(self, stop: threading.Event) -> bool:
        """Read one watch stream to its end; True when it delivered at least one event."""
        resp = self._call(
            watch=True,
            allow_watch_bookmarks=True,
            resource_version=self.resource_version,
            timeout_seconds=self._timeout_seconds,
            _preload_content=False,
            _request_timeout=self._request_timeout,
        )
        with self._response_lock:
            self._response = resp
        if stop.is_set():
            self._abort()
        got = False
        try:
            for line in _lines(resp):
                if not line.strip():
                    continue
                self._handle(line)
                got = True
                if stop.is_set():
                    break
        finally:
            with self._response_lock:
                self._response = None
            # Close before release: a stream left half-read must not go back to the pool.
            with contextlib.suppress(Exception):
                resp.close()
            with contextlib.suppress(Exception):
                resp.release_conn()
        return got

    def _handle(self, line: bytes) -> None:
        try:
            event = json.loads(line)
        except ValueError:
            raise _StreamError(f"watch of {self.resource} sent a line that is not JSON") from None
        if not isinstance(event, dict) or not isinstance(event.get("object"), dict):
            raise _StreamError(f"watch of {self.resource} sent something that is not a watch event")
        type_, obj = event.get("type"), event["object"]
        if type_ == "ERROR":
            code = obj.get("code")
            if code == 410:
                raise _Expired()
            if code in (401, 403):
                raise WatchAuthError(_auth_message(self.resource, int(code), self.namespace))
            raise _StreamError(
                f"watch of {self.resource} ended with error {code}: {as_str(obj.get('message'))}"
            )
        rv = as_str(as_map(obj.get("metadata")).get("resourceVersion"))
        if type_ in ("ADDED", "MODIFIED"):
            self._observe(obj)
        elif type_ == "DELETED":
            meta = as_map(obj.get("metadata"))
            self._known.pop((as_str(meta.get("namespace")), as_str(meta.get("name"))), None)
        elif type_ != "BOOKMARK":
            raise _StreamError(f"watch of {self.resource} sent unknown event type {type_!r}")
        if rv:
            self.resource_version = rv

    def _observe(self, obj: Mapping[str, Any]) -> tuple[str, str]:
        meta = as_map(obj.get("metadata"))
        key = (as_str(meta.get("namespace")), as_str(meta.get("name")))
        event = self._translate(self.resource, obj, now=self._clock(), cluster=self.cluster)
        if event is None:
            return key
        fingerprint = (event.revision, str(event.outcome), event.reason, event.message)
        if self._known.get(key) == fingerprint:
            return key
        self._known[key] = fingerprint
        try:
            self._on_event(event)
        except Exception:
            # A broken consumer must not stop the watch; the next change is delivered again.
            log.exception("deploy event callback failed for %s %s/%s", event.kind, key[0], key[1])
        return key


def run_watchers(watchers: list[ResourceWatcher], stop: threading.Event) -> None:
    """Run several watchers in threads until `stop`; if one fails for good, stop all and raise it."""
    errors: list[BaseException] = []
    inner = threading.Event()

    def target(w: ResourceWatcher) -> None:
        try:
            w.run(inner)
        except BaseException as exc:
            errors.append(exc)
            inner.set()

    threads = [
        threading.Thread(target=target, args=(w,), name=f"watch-{w.resource.plural}") for w in watchers
    ]
    for t in threads:
        t.start()
    try:
        while not inner.is_set() and not stop.wait(0.2):
            pass
    finally:
        inner.set()
        for t in threads:
            t.join()
    if errors:
        raise errors[0]



def _lines(resp: Any) -> Iterator[bytes]:
    buffer = b""
    for chunk in resp.stream(amt=None, decode_content=False):
        buffer += chunk if isinstance(chunk, bytes) else str(chunk).encode()
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            yield line
    if buffer.strip():
        yield buffer



def _auth_message(resource: WatchedResource, status: int, namespace: str | None) -> str:
    where = f"in namespace {namespace}" if namespace else "cluster-wide"
    if status == 401:
        return (
            "the Kubernetes API refused opsbot's credentials (401 Unauthorized)"
            f" when listing {resource} {where}: the service account token is missing, expired or wrong"
        )
    return (
        f"the Kubernetes API denied opsbot (403 Forbidden) to list and watch {resource} {where}:"
        " grant get/list/watch on it to opsbot's service account"
    )

