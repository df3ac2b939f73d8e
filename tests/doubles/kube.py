"""A local Kubernetes API server for the few resources opsbot reads in watch mode.

Why a double and not a mock: the watcher must survive what the real API server does on the wire.
That means lists carrying `metadata.resourceVersion`, newline-delimited watch streams that end
when `timeoutSeconds` runs out, BOOKMARK events only for clients that asked with
`allowWatchBookmarks`, a 410 "too old resource version" ERROR event once history is compacted,
401 without the Bearer token, and 409 on a stale Lease update. The official `kubernetes` client
talks to it over real HTTP on 127.0.0.1.

Served (all need `Authorization: Bearer <token>`):
- `GET /apis/{group}/{version}[/namespaces/{ns}]/{plural}` list, and with `?watch=1` a watch, for
  Flux Kustomizations and HelmReleases, Argo CD Applications, Cluster API Clusters, Leases,
  Deployments and StatefulSets;
- `GET /apis/{group}/{version}/namespaces/{ns}/{plural}/{name}`;
- `POST /apis/{group}/{version}/namespaces/{ns}/{plural}` (409 AlreadyExists);
- `PUT /apis/{group}/{version}/namespaces/{ns}/{plural}/{name}` (409 Conflict on a stale
  `metadata.resourceVersion`, 422 without one, as for Leases).

Tests change the cluster with `apply` / `delete` from any thread; open watches see the change as
ADDED / MODIFIED / DELETED events. `compact()` forgets history so that older resourceVersions get
410, `bookmark()` sends a BOOKMARK, `end_watches()` closes streams as an API server restart would.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from tests.doubles.serving import serve_app_in_thread


@dataclass(frozen=True)
class Kind:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> str:
        return f"{self.group}/{self.version}/{self.plural}"


KUSTOMIZATION = Kind("kustomize.toolkit.fluxcd.io", "v1", "kustomizations", "Kustomization")
HELMRELEASE = Kind("helm.toolkit.fluxcd.io", "v2", "helmreleases", "HelmRelease")
APPLICATION = Kind("argoproj.io", "v1alpha1", "applications", "Application")
LEASE = Kind("coordination.k8s.io", "v1", "leases", "Lease")
DEPLOYMENT = Kind("apps", "v1", "deployments", "Deployment")
STATEFULSET = Kind("apps", "v1", "statefulsets", "StatefulSet")
#: Cluster API's Cluster on a management cluster (the second step of `create cluster`).
CLUSTER = Kind("cluster.x-k8s.io", "v1beta1", "clusters", "Cluster")
KINDS = {k.key: k for k in (KUSTOMIZATION, HELMRELEASE, APPLICATION, LEASE, DEPLOYMENT, STATEFULSET, CLUSTER)}


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    status: int = 0


@dataclass
class _Watch:
    kind: Kind
    namespace: str | None
    bookmarks: bool
    queue: asyncio.Queue[dict[str, Any] | None]
    loop: asyncio.AbstractEventLoop
    query: dict[str, str] = field(default_factory=dict)

    def send(self, item: dict[str, Any] | None) -> None:
        with contextlib.suppress(RuntimeError):  # loop already closed at teardown
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)


def status_body(
    code: int, reason: str, message: str, details: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A `metav1.Status` as the API server writes it for errors."""
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        body["details"] = details
    return body


class KubeDouble:
    def __init__(self, *, token: str = "kube-double-token", first_resource_version: int = 1000) -> None:
        self.token = token
        self._lock = threading.Condition()
        self._rv = first_resource_version
        self._objects: dict[str, dict[tuple[str, str], dict[str, Any]]] = {k: {} for k in KINDS}
        self._history: dict[str, list[tuple[int, str, dict[str, Any]]]] = {k: [] for k in KINDS}
        self._floor: dict[str, int] = dict.fromkeys(KINDS, first_resource_version)
        self._watches: list[_Watch] = []
        self.requests: list[Recorded] = []
        self.watch_count: dict[str, int] = dict.fromkeys(KINDS, 0)
        self._faults: list[tuple[str, str, int]] = []  # (method, path prefix, status)
        self._gate = threading.Event()
        self._gate.set()

    # ----------------------------------------------------------------------------------- test API

    def apply(self, kind: Kind, obj: dict[str, Any]) -> dict[str, Any]:
        """Create or replace an object (as a controller writing status would); returns the stored copy."""
        with self._lock:
            return self._store(kind, copy.deepcopy(obj))

    def delete(self, kind: Kind, namespace: str, name: str) -> None:
        with self._lock:
            old = self._objects[kind.key].pop((namespace, name))
            self._rv += 1
            gone = copy.deepcopy(old)
            gone["metadata"]["resourceVersion"] = str(self._rv)
            self._record(kind, "DELETED", gone)

    def get(self, kind: Kind, namespace: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            obj = self._objects[kind.key].get((namespace, name))
            return copy.deepcopy(obj) if obj else None

    @property
    def resource_version(self) -> int:
        with self._lock:
            return self._rv

    def compact(self) -> None:
        """Forget all history: a watch from any resourceVersion already handed out now gets 410."""
        with self._lock:
            self._rv += 1
            for key in KINDS:
                self._history[key].clear()
                self._floor[key] = self._rv

    def bookmark(self, kind: Kind) -> int:
        """Send a BOOKMARK at the current resourceVersion to watches that allowed bookmarks."""
        with self._lock:
            self._rv += 1  # other resources moved on; this one's watchers learn the new version
            rv = self._rv
            meta = {"resourceVersion": str(rv)}
            marker = {"kind": kind.kind, "apiVersion": kind.api_version, "metadata": meta}
            event = {"type": "BOOKMARK", "object": marker}
            for w in self._watches:
                if w.kind == kind and w.bookmarks:
                    w.send(event)
            return rv

    def end_watches(self) -> None:
        """Close every open watch stream, as an API server does on restart or timeout."""
        with self._lock:
            for w in self._watches:
                w.send(None)

    def fail_next(self, kind: Kind, count: int = 1, *, status: int = 500, method: str = "GET") -> None:
        """Answer the next `count` requests for `kind` with `status` (a flaky API server)."""
        with self._lock:
            self._faults.extend([(method, f"/apis/{kind.group}/{kind.version}/", status)] * count)

    def hold_watches(self) -> None:
        """Hold new watch requests before they read history, until `release_watches()`.

        Lets a test change the cluster while the client is between two watches, the moment a
        real client can miss events.
        """
        self._gate.clear()

    def release_watches(self) -> None:
        self._gate.set()

    def wait_for_watches(self, kind: Kind, count: int, timeout: float = 10.0) -> None:
        """Block until `count` watch requests for `kind` have been opened in total (a readiness guard)."""
        with self._lock:
            if not self._lock.wait_for(lambda: self.watch_count[kind.key] >= count, timeout):
                raise TimeoutError(
                    f"{count} watches of {kind.plural} not opened; got {self.watch_count[kind.key]}"
                )

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        with self._lock:
            if not self._lock.wait_for(predicate, timeout):
                raise TimeoutError("condition not reached")

    def open_watches(self, kind: Kind) -> int:
        with self._lock:
            return sum(1 for w in self._watches if w.kind == kind)

    def calls(self, method: str, kind: Kind, *, watch: bool | None = None) -> list[Recorded]:
        prefix = f"/apis/{kind.group}/{kind.version}/"
        with self._lock:
            return [
                r
                for r in self.requests
                if r.method == method
                and r.path.startswith(prefix)
                and r.path.split("/")[-1] == kind.plural
                and (watch is None or _is_watch(r.query) == watch)
            ]

    # ----------------------------------------------------------------------------------- storage

    def _store(self, kind: Kind, obj: dict[str, Any], *, expect_rv: str | None = None) -> dict[str, Any]:
        meta = obj.setdefault("metadata", {})
        name, namespace = meta.get("name"), meta.get("namespace", "")
        if not name:
            raise web.HTTPUnprocessableEntity(
                text=json.dumps(status_body(422, "Invalid", "metadata.name: Required value")),
                content_type="application/json",
            )
        if kind == LEASE:
            _check_micro_times(obj)
        bucket = self._objects[kind.key]
        old = bucket.get((namespace, name))
        if expect_rv is not None and (old is None or old["metadata"]["resourceVersion"] != expect_rv):
            raise _conflict(kind, name)
        self._rv += 1
        obj["apiVersion"], obj["kind"] = kind.api_version, kind.kind
        meta["resourceVersion"] = str(self._rv)
        if old is None:
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
            meta.setdefault("generation", 1)
        else:
            meta["uid"] = old["metadata"]["uid"]
            meta["creationTimestamp"] = old["metadata"]["creationTimestamp"]
            generation = old["metadata"].get("generation", 1)
            meta["generation"] = generation + 1 if obj.get("spec") != old.get("spec") else generation
        bucket[(namespace, name)] = obj
        self._record(kind, "MODIFIED" if old else "ADDED", obj)
        return copy.deepcopy(obj)

    def _record(self, kind: Kind, type_: str, obj: dict[str, Any]) -> None:
        rv = int(obj["metadata"]["resourceVersion"])
        snapshot = copy.deepcopy(obj)
        self._history[kind.key].append((rv, type_, snapshot))
        for w in self._watches:
            if w.kind == kind and (w.namespace is None or w.namespace == obj["metadata"].get("namespace")):
                w.send({"type": type_, "object": copy.deepcopy(snapshot)})
        self._lock.notify_all()

    # ----------------------------------------------------------------------------------- HTTP

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        base = "/apis/{group}/{version}"
        app.router.add_get(base + "/{plural}", self._collection)
        app.router.add_get(base + "/namespaces/{namespace}/{plural}", self._collection)
        app.router.add_post(base + "/namespaces/{namespace}/{plural}", self._create)
        app.router.add_get(base + "/namespaces/{namespace}/{plural}/{name}", self._get)
        app.router.add_put(base + "/namespaces/{namespace}/{plural}/{name}", self._replace)
        return app

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        rec = Recorded(request.method, request.path, dict(request.query))
        with self._lock:
            self.requests.append(rec)
            self._lock.notify_all()
        if request.headers.get("Authorization", "") != f"Bearer {self.token}":
            rec.status = 401
            return web.json_response(status_body(401, "Unauthorized", "Unauthorized"), status=401)
        with self._lock:
            fault = next(
                (f for f in self._faults if f[0] == request.method and request.path.startswith(f[1])), None
            )
            if fault:
                self._faults.remove(fault)
        if fault:
            rec.status = fault[2]
            body = status_body(fault[2], "InternalError", "Internal error occurred: injected fault")
            return web.json_response(body, status=fault[2])
        try:
            response: web.StreamResponse = await handler(request)
        except web.HTTPException as exc:
            rec.status = exc.status
            raise
        rec.status = response.status
        return response

    def _kind(self, request: web.Request) -> Kind:
        m = request.match_info
        kind = KINDS.get(f"{m['group']}/{m['version']}/{m['plural']}")
        if kind is None:
            raise _error(404, "NotFound", "the server could not find the requested resource")
        return kind

    async def _collection(self, request: web.Request) -> web.StreamResponse:
        kind = self._kind(request)
        namespace = request.match_info.get("namespace")
        if _is_watch(dict(request.query)):
            return await self._watch(request, kind, namespace)
        with self._lock:
            items = [
                copy.deepcopy(o)
                for (ns, _), o in sorted(self._objects[kind.key].items())
                if namespace is None or ns == namespace
            ]
            rv = self._rv
        return web.json_response(
            {
                "apiVersion": kind.api_version,
                "kind": f"{kind.kind}List",
                "metadata": {"resourceVersion": str(rv)},
                "items": items,
            }
        )

    async def _watch(self, request: web.Request, kind: Kind, namespace: str | None) -> web.StreamResponse:
        while not self._gate.is_set():
            await asyncio.sleep(0.01)
        query = dict(request.query)
        since = query.get("resourceVersion", "")
        timeout = float(query.get("timeoutSeconds", "1800"))
        watch = _Watch(
            kind,
            namespace,
            bookmarks=query.get("allowWatchBookmarks") in ("true", "1"),
            queue=asyncio.Queue(),
            loop=asyncio.get_running_loop(),
            query=query,
        )
        with self._lock:
            backlog: list[dict[str, Any] | None] = []
            if since in ("", "0"):
                backlog = [
                    {"type": "ADDED", "object": copy.deepcopy(o)}
                    for (ns, _), o in sorted(self._objects[kind.key].items())
                    if namespace is None or ns == namespace
                ]
            elif not since.isdigit():
                raise _error(400, "BadRequest", f"invalid resource version {since!r}")
            elif int(since) < self._floor[kind.key]:
                backlog = [
                    {
                        "type": "ERROR",
                        "object": status_body(
                            410, "Expired", f"too old resource version: {since} ({self._floor[kind.key]})"
                        ),
                    },
                    None,
                ]
            else:
                backlog = [
                    {"type": t, "object": copy.deepcopy(o)}
                    for rv, t, o in self._history[kind.key]
                    if rv > int(since) and (namespace is None or o["metadata"].get("namespace") == namespace)
                ]
            self._watches.append(watch)
            self.watch_count[kind.key] += 1
            self._lock.notify_all()

        response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            for item in backlog:
                if item is None:
                    return response
                await response.write(json.dumps(item).encode() + b"\n")
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                transport = request.transport
                if transport is None or transport.is_closing():
                    break  # the client went away (aiohttp does not cancel the handler for us)
                try:
                    event: dict[str, Any] | None = await asyncio.wait_for(
                        watch.queue.get(), min(remaining, 0.05)
                    )
                except TimeoutError:
                    continue
                if event is None:
                    break
                await response.write(json.dumps(event).encode() + b"\n")
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            with self._lock:
                self._watches.remove(watch)
                self._lock.notify_all()
        return response

    async def _get(self, request: web.Request) -> web.StreamResponse:
        kind = self._kind(request)
        ns, name = request.match_info["namespace"], request.match_info["name"]
        with self._lock:
            obj = self._objects[kind.key].get((ns, name))
            if obj is None:
                raise _not_found(kind, name)
            return web.json_response(copy.deepcopy(obj))

    async def _create(self, request: web.Request) -> web.StreamResponse:
        kind = self._kind(request)
        body = await _json_body(request)
        meta = body.setdefault("metadata", {})
        meta["namespace"] = request.match_info["namespace"]
        meta.pop("resourceVersion", None)
        with self._lock:
            if (meta["namespace"], meta.get("name")) in self._objects[kind.key]:
                raise _error(
                    409,
                    "AlreadyExists",
                    f'{kind.plural}.{kind.group} "{meta.get("name")}" already exists',
                    {"name": meta.get("name"), "group": kind.group, "kind": kind.plural},
                )
            stored = self._store(kind, body)
        return web.json_response(stored, status=201)

    async def _replace(self, request: web.Request) -> web.StreamResponse:
        kind = self._kind(request)
        ns, name = request.match_info["namespace"], request.match_info["name"]
        body = await _json_body(request)
        meta = body.setdefault("metadata", {})
        if meta.get("name", name) != name or meta.get("namespace", ns) != ns:
            raise _error(400, "BadRequest", "the name of the object does not match the name on the URL")
        meta["name"], meta["namespace"] = name, ns
        expect = meta.get("resourceVersion")
        if not expect:
            raise _error(
                422,
                "Invalid",
                f'{kind.kind}.{kind.group} "{name}" is invalid: metadata.resourceVersion: '
                "Invalid value: 0x0: must be specified for an update",
            )
        with self._lock:
            if (ns, name) not in self._objects[kind.key]:
                raise _not_found(kind, name)
            stored = self._store(kind, body, expect_rv=str(expect))
        return web.json_response(stored)


# --------------------------------------------------------------------------------------------- helpers


def _is_watch(query: dict[str, str]) -> bool:
    return query.get("watch") in ("1", "true", "True")


#: metav1.MicroTime's wire format: Go parses it with RFC3339Micro, which needs all six digits.
_MICRO_TIME = re.compile(r"\A\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}(?:Z|[+-]\d{2}:\d{2})\Z")


def _check_micro_times(obj: dict[str, Any]) -> None:
    spec = obj.get("spec") or {}
    for key in ("acquireTime", "renewTime"):
        value = spec.get(key)
        if value is not None and not (isinstance(value, str) and _MICRO_TIME.match(value)):
            raise _error(
                400,
                "BadRequest",
                f'Lease in version "v1" cannot be handled as a Lease: parsing time {json.dumps(value)}'
                ' as "2006-01-02T15:04:05.000000Z07:00": cannot parse',
            )


def _error(code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> web.HTTPException:
    exc = web.HTTPException(
        text=json.dumps(status_body(code, reason, message, details)), content_type="application/json"
    )
    exc.set_status(code)
    return exc


def _not_found(kind: Kind, name: str) -> web.HTTPException:
    return _error(
        404, "NotFound", f'{kind.plural}.{kind.group} "{name}" not found', {"name": name, "kind": kind.plural}
    )


def _conflict(kind: Kind, name: str) -> web.HTTPException:
    return _error(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {kind.plural}.{kind.group} "{name}": the object has been modified;'
        " please apply your changes to the latest version and try again",
        {"name": name, "group": kind.group, "kind": kind.plural},
    )


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise _error(400, "BadRequest", "the body is not JSON") from None
    if not isinstance(body, dict):
        raise _error(400, "BadRequest", "the body must be a JSON object")
    return body


@dataclass
class RunningKube:
    double: KubeDouble
    url: str


@contextlib.contextmanager
def serve_in_thread(double: KubeDouble) -> Iterator[RunningKube]:
    """Run the double on 127.0.0.1:<free port> in its own thread and event loop.

    Why a thread: the kubernetes client is synchronous (urllib3), and the watcher under test runs
    in threads of its own; the test body stays plain synchronous code.
    """
    def end_watches() -> None:
        double.release_watches()
        double.end_watches()

    with serve_app_in_thread(double.app(), name="kube-double", shutdown_timeout=0.5,
                             before_cleanup=end_watches) as served:
        yield RunningKube(double, served.url)
