"""Helm's own template engine, behind one door (helm-python-sdk today; swap the worker to change it).

Why a worker process: the engine is Go code called through ctypes, so a chart whose templates loop
for ever or allocate without bound cannot be interrupted from Python. Each render (and each chart
pull) runs in a short-lived child with an address-space limit and a wall-clock timeout, started
without a shell, in an empty directory, with no kubeconfig and a throwaway HOME.

What the engine may see: the chart is handed over as an in-memory archive built from the chart's
own folder at one commit, so `.Files` can only read that folder; `lookup` has no cluster and returns
empty results (tests/integration/test_helm_render.py proves both).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from opsbot.manifests.gitrepo import Snapshot
from opsbot.manifests.images import is_version_range

RENDER_TIMEOUT = 20.0  # seconds; a real chart renders in well under one
PULL_TIMEOUT = 30.0
MEMORY_LIMIT = 3 * 1024**3  # address space of the worker (the engine maps ~85 MB of code)
MAX_CHART_BYTES = 20 * 1024**2
WORKER = Path(__file__).with_name("helm_worker.py")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class HelmError(Exception):
    """The chart could not be rendered or fetched; `message` says why in one line."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class EngineUnavailable(HelmError):
    """Helm's engine cannot run here at all: every render proof is skipped, none is failed."""


class ChartMissing(HelmError):
    """The chart source answered, and it has no such chart or version: a wrong change, not a skipped proof."""


_NOT_FOUND = re.compile(
    r'^chart "[^"]+" version "[^"]+" not found in \S+ repository$'  # index.yaml repository
    r'|^failed to perform "FetchReference" on source: \S+:\S+: not found$'  # OCI registry answered 404
)


@dataclass(frozen=True)
class Rendered:
    """What a chart renders: the objects, in template order, and the chart's default values."""

    objects: list[dict[str, Any]]
    defaults: dict[str, Any]
    #: subcharts Chart.yaml declares but charts/ lacks (not vendored): the render is without them
    missing_deps: tuple[str, ...] = ()


def chart_archive(snap: Snapshot, chart_dir: str) -> bytes:
    """The chart folder at this commit as a .tgz in memory (the only files the engine gets)."""
    files = snap.files_under(chart_dir)
    if not files:
        raise HelmError(f"{chart_dir}/ has no files")
    snap.prefetch(files)
    top = PurePosixPath(chart_dir).name or "chart"
    buf = io.BytesIO()
    total = 0
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for path in files:
            data = snap.read(path).encode("utf-8")
            total += len(data)
            if total > MAX_CHART_BYTES:
                raise HelmError(f"{chart_dir}/ is larger than {MAX_CHART_BYTES // 1024**2} MB")
            info = tarfile.TarInfo(f"{top}/{path[len(chart_dir) + 1 :] if chart_dir else path}")
            info.size = len(data)
            info.mtime = 0
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def render(archive: bytes, values: dict[str, Any], *, release: str, namespace: str) -> Rendered:
    """Render a packaged chart with `values` (Helm merges the chart's own defaults under them)."""
    return render_many(archive, [values], release=release, namespace=namespace)[0]


def render_many(
    archive: bytes, values_list: list[dict[str, Any]], *, release: str, namespace: str
) -> list[Rendered]:
    """One render per values set, in one worker (a before/after proof costs one process start)."""
    out = _run_worker(
        {
            "op": "render",
            "archive": base64.b64encode(archive).decode(),
            "values_list": values_list,
            "release": release,
            "namespace": namespace,
        },
        RENDER_TIMEOUT,
    )
    results: list[Rendered] = []
    for manifests in out["manifests_list"]:
        objects: list[dict[str, Any]] = []
        for path in sorted(manifests):
            if path.endswith("NOTES.txt"):
                continue
            try:
                docs = list(yaml.safe_load_all(manifests[path]))
            except yaml.YAMLError as exc:
                raise HelmError(f"{path} renders invalid YAML: {getattr(exc, 'problem', exc)}") from None
            objects.extend(d for d in docs if isinstance(d, dict))
        results.append(Rendered(objects, out.get("values") or {}, tuple(out.get("missing_deps") or ())))
    return results


def default_values(archive: bytes) -> dict[str, Any]:
    """The chart's own values.yaml, as Helm reads it."""
    out = _run_worker({"op": "values", "archive": base64.b64encode(archive).decode()}, RENDER_TIMEOUT)
    values = out.get("values")
    return values if isinstance(values, dict) else {}


# ------------------------------------------------------------------------------------------ charts from elsewhere


@dataclass(frozen=True)
class ChartRef:
    """A chart that lives outside the repo: a Helm repository (https) or an OCI reference."""

    name: str
    version: str
    url: str  # https://host/path (index.yaml repository) or oci://host/path (the name is appended)

    @property
    def cache_name(self) -> str:
        key = hashlib.sha256(f"{self.url}\n{self.name}\n{self.version}".encode()).hexdigest()[:16]
        return f"{self.name}-{self.version}-{key}.tgz"


def cached_or_pulled(ref: ChartRef, cache_dir: Path | None, *, fetch: bool) -> bytes:
    """The chart archive from the local cache, or pulled into it when fetching is allowed.

    Raises HelmError saying why the chart cannot be had (not cached and fetching off, unreachable, no
    such version, …)."""
    if not _SAFE_NAME.match(ref.name):
        raise HelmError(f'"{ref.name}" is not a chart name opsbot will fetch')
    if is_version_range(ref.version):
        raise HelmError(f'chart version "{ref.version}" is a range, so the repo does not say which chart runs')
    if not _SAFE_NAME.match(ref.version.lstrip("v")):
        raise HelmError(f'"{ref.version}" is not a chart version opsbot will fetch')
    cached = cache_dir / ref.cache_name if cache_dir else None
    if cached is not None and cached.is_file():
        return cached.read_bytes()
    if not fetch:
        raise HelmError(f"{ref.name} {ref.version} is not in the local chart cache and fetching charts is off")
    if not ref.url.startswith(("https://", "http://", "oci://")):
        raise HelmError(f"{ref.url} is not an http(s):// or oci:// chart source")
    with tempfile.TemporaryDirectory(prefix="opsbot-pull-") as tmp:
        try:
            out = _run_worker(
                {"op": "pull", "name": ref.name, "version": ref.version, "url": ref.url, "dest": tmp}, PULL_TIMEOUT
            )
        except HelmError as exc:
            if _NOT_FOUND.match(exc.message):
                raise ChartMissing(exc.message) from None
            raise
        got = Path(out["path"])
        if got.parent != Path(tmp) or not got.is_file():
            raise HelmError(f"pulling {ref.name} {ref.version} produced no archive")
        if got.stat().st_size > MAX_CHART_BYTES:
            raise HelmError(f"{ref.name} {ref.version} is larger than {MAX_CHART_BYTES // 1024**2} MB")
        data = got.read_bytes()
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=cached.parent, prefix=".chart-")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp_name, cached)
    return data


# ------------------------------------------------------------------------------------------ the worker


def _run_worker(request: dict[str, Any], timeout: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="opsbot-helm-") as home:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": home,
            "KUBECONFIG": "/dev/null",
            "HELM_CACHE_HOME": f"{home}/cache",
            "HELM_CONFIG_HOME": f"{home}/config",
            "HELM_DATA_HOME": f"{home}/data",
        }
        for proxy in ("HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY", "https_proxy", "http_proxy", "no_proxy"):
            if proxy in os.environ:
                env[proxy] = os.environ[proxy]
        try:
            proc = subprocess.run(
                [sys.executable, "-I", str(WORKER)],
                input=json.dumps(request).encode(),
                capture_output=True,
                cwd=home,
                env=env,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise HelmError(f"Helm took longer than {timeout:.0f} s and was stopped") from None
    try:
        answer = json.loads(proc.stdout.decode() or "{}")
    except ValueError:
        answer = {}
    if answer.get("unavailable"):
        raise EngineUnavailable(_one_line(str(answer.get("error"))))
    if not answer.get("ok"):
        err = answer.get("error") or proc.stderr.decode(errors="replace").strip().splitlines()[-1:] or [
            f"the Helm worker exited with {proc.returncode}"
        ]
        raise HelmError(_one_line(err if isinstance(err, str) else err[0]))
    return answer


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text[:300]
