"""The child process that runs Helm's engine for opsbot.manifests.helm (the only importer of helm_python).

Started as `python -I helm_worker.py` with a JSON request on stdin; answers one JSON object on stdout.
It imports nothing of opsbot, so a render costs one interpreter start plus the engine's load.
"""

from __future__ import annotations

import base64
import json
import resource
import sys
from pathlib import Path
from typing import Any

MEMORY_LIMIT = 3 * 1024**3


def handle(request: dict[str, Any]) -> dict[str, Any]:
    try:
        from helm_python.chart import Chart
        from helm_python.registry import pull
    except ImportError as exc:  # e.g. no wheel of the engine for this platform
        return {"ok": False, "unavailable": True, "error": f"Helm's engine (helm-python-sdk) is not installed: {exc}"}

    op = request.get("op")
    if op in ("render", "values"):
        with Chart.load_archive(base64.b64decode(request["archive"])) as chart:
            if op == "values":
                return {"ok": True, "values": chart.values}
            out = [
                chart.render(values, name=request["release"], namespace=request["namespace"])
                for values in request["values_list"]
            ]
            declared = {str(d.get("name")) for d in chart.metadata.get("dependencies") or [] if isinstance(d, dict)}
            loaded = {str(d.get("name")) for d in chart.dependencies}
            missing = sorted(declared - loaded)
            return {"ok": True, "manifests_list": out, "values": chart.values, "missing_deps": missing}
    if op == "pull":
        url, name, dest = request["url"], request["name"], request["dest"]
        if url.startswith("oci://"):
            # like Docker, a registry on this machine's loopback speaks plain HTTP; any other, TLS only
            host = url[len("oci://") :].split("/", 1)[0].rsplit(":", 1)[0]
            loopback = host in ("127.0.0.1", "localhost", "[::1]")
            pull(f"{url.rstrip('/')}/{name}", version=request["version"], destination=dest, plain_http=loopback)
        else:
            pull(name, repo_url=url, version=request["version"], destination=dest)
        tgz = sorted(Path(dest).glob("*.tgz"))
        if not tgz:
            return {"ok": False, "error": f"pulling {name} {request['version']} from {url} produced no archive"}
        return {"ok": True, "path": str(tgz[0])}
    return {"ok": False, "error": f"unknown op {op!r}"}


def main() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    try:
        answer = handle(json.loads(sys.stdin.buffer.read()))
    except MemoryError:
        answer = {"ok": False, "error": f"Helm needed more than {MEMORY_LIMIT // 1024**3} GB and was stopped"}
    except Exception as exc:  # the message goes back to the parent, which shows it in one line
        answer = {"ok": False, "error": str(exc) or type(exc).__name__}
    sys.stdout.write(json.dumps(answer))


if __name__ == "__main__":
    main()
