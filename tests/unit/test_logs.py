"""Structured logs: one JSON object per line, a request id that follows the work, and no secret in
any line — neither a configured secret nor anything shaped like a token, wherever it hides
(message, `extra=` fields, exception text). Ordinary text must come through untouched.

Token-shaped strings are assembled at run time from random parts, so this file holds no string
that a secret scanner would (rightly) flag.
"""

from __future__ import annotations

import contextvars
import io
import json
import logging
import secrets
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web

from opsbot import cli
from opsbot.errors import ConfigError
from opsbot.logs import (
    MASK,
    REQUEST_ID_HEADER,
    JsonFormatter,
    Redactor,
    get_request_id,
    request_context,
    request_id_middleware,
    setup_logging,
)
from opsbot.settings import load_settings


def rand(n: int = 24) -> str:
    return secrets.token_hex(n)[:n]


def pem() -> str:
    body = "\n".join(secrets.token_urlsafe(48) for _ in range(4))
    return f"-----BEGIN RSA PRIVATE KEY-----\n{body}\n-----END RSA PRIVATE KEY-----"


@pytest.fixture
def root_logging() -> Iterator[None]:
    """setup_logging replaces the root handlers; put pytest's back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    opsbot_level = logging.getLogger("opsbot").level
    yield
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)
    logging.getLogger("opsbot").setLevel(opsbot_level)
    logging.captureWarnings(False)


@pytest.fixture
def secret_env() -> dict[str, str]:
    """Every secret setting, with values of the real shapes (or arbitrary, where the real ones are)."""
    return {
        "GITHUB_TOKEN": "ghp_" + rand(36),
        "GITHUB_APP_PRIVATE_KEY": pem(),
        "GITHUB_WEBHOOK_SECRET": rand(40),
        "SLACK_BOT_TOKEN": f"xoxb-{rand(11)}-{rand(13)}-{rand(24)}",
        "SLACK_SIGNING_SECRET": rand(32),
        "SLACK_APP_TOKEN": f"xapp-1-A{rand(10)}-{rand(13)}-{rand(40)}",
        "FLUX_WEBHOOK_SECRET": rand(64),
        "ARGOCD_WEBHOOK_TOKEN": rand(32),
        "OPSBOT_DATABASE_URL": f"postgresql://opsbot:{rand(20)}@db.internal:5432/opsbot?sslmode=require",
    }


def capture(env: dict[str, str]) -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    setup_logging(load_settings(environ=env), stream=stream)
    return logging.getLogger("opsbot.test"), stream


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


# --------------------------------------------------------------------------------------------- redaction


@pytest.mark.parametrize(
    "var",
    [
        "GITHUB_TOKEN",
        "GITHUB_APP_PRIVATE_KEY",
        "GITHUB_WEBHOOK_SECRET",
        "SLACK_BOT_TOKEN",
        "SLACK_SIGNING_SECRET",
        "SLACK_APP_TOKEN",
        "FLUX_WEBHOOK_SECRET",
        "ARGOCD_WEBHOOK_TOKEN",
        "OPSBOT_DATABASE_URL",
    ],
)
def test_each_configured_secret_is_redacted_everywhere(
    root_logging: None, secret_env: dict[str, str], var: str
) -> None:
    log, stream = capture(secret_env)
    value = secret_env[var]
    if var == "OPSBOT_DATABASE_URL":
        value = value.split(":", 2)[2].split("@")[0]  # the password alone, as a driver error may quote it
    log.info("peer said %s", value, extra={"detail": f"header={value}", "nested": {"list": [value]}})
    try:
        raise RuntimeError(f"refused: {value}")
    except RuntimeError:
        log.exception("call failed", extra={"repr": repr(value)})
    out = stream.getvalue()
    assert value not in out
    assert value.replace("\n", "\\n") not in out  # nor its JSON-escaped form
    first, second = lines(stream)
    assert first["message"] == f"peer said {MASK}"
    assert first["detail"] == f"header={MASK}"
    assert first["nested"] == {"list": [MASK]}
    assert "refused: ***" in second["exception"]
    assert MASK in second["repr"]


def test_a_secret_the_shapes_would_miss_is_still_redacted_by_value(root_logging: None) -> None:
    """An arbitrary signing secret has no shape; only knowing the value catches it."""
    secret = "correct-horse-battery-staple"
    log, stream = capture({"SLACK_SIGNING_SECRET": secret})
    log.warning("signature base used correct-horse-battery-staple as key")
    assert lines(stream)[0]["message"] == "signature base used *** as key"
    assert Redactor().text(secret) == secret  # no configured value: not a token shape, so kept


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (f"token xoxb-{'1' * 11}-{'2' * 13}-{'a' * 24} rejected", "token *** rejected"),
        (f"xoxp-{'1' * 11}-{'2' * 11}-{'3' * 13}-{'b' * 32}", MASK),
        (f"app token xapp-1-A0123456789-{'4' * 13}-{'c' * 64}.", "app token ***."),
        (f"GITHUB_TOKEN=ghp_{'A1b2' * 9}", "GITHUB_TOKEN=***"),
        (f"pat github_pat_11ABCDEFG0{'x' * 12}_{'y' * 59} ok", "pat *** ok"),
        (f"installation ghs_{'Z9' * 18} expires", "installation *** expires"),
        ("Authorization: Bearer abc.DEF-123_456/789+=", f"Authorization: Bearer {MASK}"),
        ("{'authorization': 'token 0123456789abcdef'}", f"{{'authorization': 'token {MASK}'}}"),
        ("headers={'Authorization': 'bearer xyz987654321'}", f"headers={{'Authorization': 'bearer {MASK}'}}"),
        (
            "key=-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBg\nkqhkiG9w0BAQEF\n-----END PRIVATE KEY----- loaded",
            f"key={MASK} loaded",
        ),
        ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk (truncated", MASK),
        (
            "could not connect to postgresql://opsbot:s3cr3t-pw@db:5432/opsbot",
            "could not connect to postgresql://opsbot:***@db:5432/opsbot",
        ),
        (
            "clone https://x-access-token:abc123def456@github.com/acme/fleet.git",
            "clone https://x-access-token:***@github.com/acme/fleet.git",
        ),
        (
            "jwt eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiIxMjM0NSJ9.c2lnbmF0dXJlLXBhcnQ",
            "jwt ***",
        ),
    ],
)
def test_token_shapes_are_redacted_without_configuration(raw: str, expected: str) -> None:
    assert Redactor().text(raw) == expected


@pytest.mark.parametrize(
    "text",
    [
        "Scale frontend to 5 replicas in production (PR #42, merged as 1a2b3c4d5e6f)",
        "https://github.com/acme/fleet/pull/42",
        "postgresql://db.internal:5432/opsbot?sslmode=require",
        "the token expired; ask for a new one",
        "Bearer tokens go in the Authorization header",
        "ghp_ is the prefix of a classic token",
        "image ghcr.io/acme/frontend:1.4.2 → 1.5.0, revision main@sha1:0123456789abcdef",
        "xoxb, xapp and ghs are token prefixes",
    ],
)
def test_ordinary_text_is_left_alone(root_logging: None, secret_env: dict[str, str], text: str) -> None:
    log, stream = capture(secret_env)
    log.info(text, extra={"same": text})
    line = lines(stream)[0]
    assert line["message"] == text
    assert line["same"] == text


def test_short_configured_values_are_not_hunted_for() -> None:
    """A 3-character "secret" would blank out every occurrence of ordinary syllables."""
    assert Redactor(["abc"]).text("abc abcdef") == "abc abcdef"
    assert Redactor(["abcd"]).text("abcd abcdef") == f"{MASK} {MASK}ef"


# --------------------------------------------------------------------------------------------- format


def test_one_json_object_per_line_with_the_documented_fields(root_logging: None) -> None:
    log, stream = capture({})
    log.info("first\nwith a newline", extra={"request": "R7", "count": 3})
    log.warning("second")
    raw = stream.getvalue().splitlines()
    assert len(raw) == 2
    first = json.loads(raw[0])
    assert list(first)[:5] == ["time", "level", "logger", "message", "request_id"]
    assert first["time"].endswith("Z") and first["time"][10] == "T"
    assert first["level"] == "INFO" and first["logger"] == "opsbot.test"
    assert first["message"] == "first\nwith a newline"
    assert first["request_id"] is None
    assert first["request"] == "R7" and first["count"] == 3
    assert json.loads(raw[1])["level"] == "WARNING"


def test_the_request_id_follows_the_work_into_threads(root_logging: None) -> None:
    log, stream = capture({})
    with request_context() as rid:
        log.info("in the handler")
        ctx = contextvars.copy_context()
        t = threading.Thread(target=lambda: ctx.run(log.info, "in a worker thread"))
        t.start()
        t.join()
    log.info("after")
    got = [line["request_id"] for line in lines(stream)]
    assert got == [rid, rid, None]
    assert len(rid) == 16
    assert get_request_id() is None


def test_setup_logging_replaces_plain_handlers_and_respects_the_level(root_logging: None) -> None:
    plain = io.StringIO()
    logging.getLogger().addHandler(logging.StreamHandler(plain))
    token = "ghp_" + rand(36)
    stream = io.StringIO()
    setup_logging(
        load_settings(environ={"OPSBOT_LOG_LEVEL": "warning", "GITHUB_TOKEN": token}), stream=stream
    )
    log = logging.getLogger("opsbot.test")
    log.info("hidden below the level")
    log.warning("with %s", token)
    assert plain.getvalue() == ""  # no unredacted copy anywhere
    assert [line["message"] for line in lines(stream)] == [f"with {MASK}"]


def test_a_bad_log_level_is_a_config_error(root_logging: None) -> None:
    with pytest.raises(ConfigError, match="OPSBOT_LOG_LEVEL"):
        setup_logging(load_settings(environ={"OPSBOT_LOG_LEVEL": "chatty"}), stream=io.StringIO())


def test_formatter_handles_values_json_cannot_encode() -> None:
    record = logging.LogRecord("opsbot.x", logging.INFO, __file__, 1, "msg", None, None)
    record.obj = object()
    record.pair = ("a", 1)
    out = json.loads(JsonFormatter().format(record))
    assert out["obj"].startswith("<object object") and out["pair"] == ["a", 1]


# --------------------------------------------------------------------------------------------- HTTP and CLI


async def test_middleware_gives_each_request_an_id(root_logging: None, aiohttp_client: Any) -> None:
    log, stream = capture({})

    async def hello(request: web.Request) -> web.Response:
        log.info("handling")
        return web.Response(text="ok")

    app = web.Application(middlewares=[request_id_middleware])
    app.router.add_get("/", hello)
    client = await aiohttp_client(app)
    fresh = await client.get("/")
    await client.get("/", headers={REQUEST_ID_HEADER: "abc-123"})
    hostile = await client.get("/", headers={REQUEST_ID_HEADER: "x" * 300})
    ids = [line["request_id"] for line in lines(stream) if line["message"] == "handling"]
    assert ids == [fresh.headers[REQUEST_ID_HEADER], "abc-123", hostile.headers[REQUEST_ID_HEADER]]
    assert len(set(ids)) == 3 and len(ids[2]) == 16  # an overlong caller id is replaced, not echoed


def test_opsbot_serve_installs_json_logging(
    root_logging: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`opsbot serve` goes through cli.cmd_serve: by the time the server runs, logs are JSON and redacted."""
    import opsbot.server

    token = f"xoxb-{rand(11)}-{rand(13)}-{rand(24)}"
    for var in ("OPSBOT_SETTINGS_FILE", "OPSBOT_DATABASE_URL", "OPSBOT_FORGE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SLACK_BOT_TOKEN", token)
    monkeypatch.setenv("OPSBOT_LOG_LEVEL", "INFO")
    seen: list[logging.Formatter | None] = []

    def fake_serve(settings: Any, host: str | None = None) -> int:
        seen.append(logging.getLogger().handlers[0].formatter)
        logging.getLogger("opsbot.server").info("starting with %s", settings.slack_bot_token.get())
        return 0

    monkeypatch.setattr(opsbot.server, "serve", fake_serve)
    assert cli.main(["serve"]) == 0
    assert len(seen) == 1 and isinstance(seen[0], JsonFormatter)
    err = capsys.readouterr().err
    assert token not in err
    assert json.loads(err.strip().splitlines()[-1])["message"] == f"starting with {MASK}"
