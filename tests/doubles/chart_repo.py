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
