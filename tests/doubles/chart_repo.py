"""A Helm chart repository double: `index.yaml` plus packaged charts, served over HTTP on loopback.

Why a double: opsbot pulls charts that live outside the manifest repo (a Flux HelmRepository) to
render them. A Helm repository is only static files, so this serves exactly what one serves: the
index Helm reads (`entries.<name>[].urls/digest/version`), and the `.tgz` archives it points at,
packaged here with `tarfile` from a dict of chart files. Unknown paths get 404 like a real one, and
`requests` records what was asked, so a test can prove the cache was used instead of the network.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import yaml


def package(name: str, version: str, files: Mapping[str, str]) -> bytes:
    """A chart archive as `helm package` lays it out: `<name>/Chart.yaml`, `<name>/templates/…`."""
    chart_yaml = {"apiVersion": "v2", "name": name, "version": version, "appVersion": version}
    entries = {"Chart.yaml": yaml.safe_dump(chart_yaml), **files}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for path, text in sorted(entries.items()):
            data = text.encode()
            info = tarfile.TarInfo(f"{name}/{path}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class ChartRepo:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.charts: dict[str, list[dict[str, object]]] = {}
        self.requests: list[str] = []
        self.url = ""

    def add(self, name: str, version: str, files: Mapping[str, str]) -> None:
        data = package(name, version, files)
        fname = f"{name}-{version}.tgz"
        self.files[fname] = data
        self.charts.setdefault(name, []).append(
            {
                "apiVersion": "v2",
                "name": name,
                "version": version,
                "appVersion": version,
                "urls": [fname],
                "digest": hashlib.sha256(data).hexdigest(),
                "created": "2024-03-01T09:00:00Z",
            }
        )
        index = {"apiVersion": "v1", "entries": self.charts, "generated": "2024-03-01T09:00:00Z"}
        self.files["index.yaml"] = yaml.safe_dump(index).encode()


@contextmanager
def serve(repo: ChartRepo) -> Iterator[ChartRepo]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0].removeprefix("/charts/")
            repo.requests.append(path)
            body = repo.files.get(path)
            if body is None:
                self.send_response(404)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    repo.url = f"http://127.0.0.1:{server.server_address[1]}/charts"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield repo
    finally:
        server.shutdown()
        server.server_close()


class OciRegistry:
    """An OCI distribution registry holding Helm charts, as `helm push` stores them.

    Serves what `helm pull oci://…` reads: `GET /v2/`, the manifest by tag (config media type
    `application/vnd.cncf.helm.config.v1+json`, one layer `application/vnd.cncf.helm.chart.content.v1.tar+gzip`)
    with its `Docker-Content-Digest`, and blobs by digest; anything else is 404 with the registry's error
    body. Plain HTTP on loopback, like a local registry."""

    MANIFEST = "application/vnd.oci.image.manifest.v1+json"

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.manifests: dict[tuple[str, str], bytes] = {}
        self.requests: list[str] = []
        self.host = ""

    def add(self, repository: str, name: str, version: str, files: Mapping[str, str]) -> None:
        import json

        layer = package(name, version, files)
        config = json.dumps({"apiVersion": "v2", "name": name, "version": version}).encode()
        for blob in (layer, config):
            self.blobs["sha256:" + hashlib.sha256(blob).hexdigest()] = blob
        manifest = {
            "schemaVersion": 2,
            "mediaType": self.MANIFEST,
            "config": {
                "mediaType": "application/vnd.cncf.helm.config.v1+json",
                "digest": "sha256:" + hashlib.sha256(config).hexdigest(),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.cncf.helm.chart.content.v1.tar+gzip",
                    "digest": "sha256:" + hashlib.sha256(layer).hexdigest(),
                    "size": len(layer),
                }
            ],
        }
        self.manifests[(f"{repository}/{name}", version)] = json.dumps(manifest).encode()


@contextmanager
def serve_oci(registry: OciRegistry) -> Iterator[OciRegistry]:
    import re

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, body: bytes | None, ctype: str = "application/octet-stream", digest: str = "") -> None:
            if body is None:
                err = b'{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}'
                self.send_response(404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(err)))
                self.end_headers()
                if self.command == "GET":
                    self.wfile.write(err)
                return
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            if digest:
                self.send_header("Docker-Content-Digest", digest)
            self.end_headers()
            if self.command == "GET":
                self.wfile.write(body)

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            registry.requests.append(f"{self.command} {path}")
            if path in ("/v2/", "/v2"):
                return self._answer(b"{}", "application/json")
            m = re.match(r"^/v2/(.+)/manifests/([^/]+)$", path)
            if m:
                body = registry.manifests.get((m.group(1), m.group(2)))
                if body is None and m.group(2).startswith("sha256:"):
                    body = next(
                        (b for b in registry.manifests.values() if "sha256:" + hashlib.sha256(b).hexdigest() == m.group(2)),
                        None,
                    )
                digest = "sha256:" + hashlib.sha256(body).hexdigest() if body is not None else ""
                return self._answer(body, OciRegistry.MANIFEST, digest)
            m = re.match(r"^/v2/(.+)/blobs/(sha256:[0-9a-f]{64})$", path)
            if m:
                return self._answer(registry.blobs.get(m.group(2)), digest=m.group(2))
            return self._answer(None)

        do_HEAD = do_GET

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    registry.host = f"127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield registry
    finally:
        server.shutdown()
        server.server_close()
