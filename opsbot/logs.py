"""Structured JSON logs for `opsbot serve`, with request ids and secrets redacted.

Why JSON, one object per line: a cluster's log pipeline (Loki, Elasticsearch, Cloud Logging)
indexes the fields (`level`, `logger`, `request_id`, a request's `reference`) without a parser of
our own. Why a request id in a context variable: one `/ops` command crosses the aiohttp handler,
a worker thread (`contextvars.copy_context().run`) and the outbox; the id set once at the edge
follows it, so `grep request_id` gives the whole story of one command.

Why redaction here, at the last step before bytes leave the process: `Secret` already keeps the
settings' own values out of f-strings, but a secret can still arrive inside text we did not write
(an exception from a client library quoting a header, a URL with a password, a peer's error body).
Redaction therefore looks for two things in the message, the exception text and every extra:
the configured secret values themselves, and the shapes secrets have (Slack and GitHub tokens,
`Bearer ...`, PEM private keys, passwords in URLs). It is a safety net, not a licence to log secrets.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import re
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import IO, Any
from urllib.parse import unquote, urlsplit

from opsbot.errors import ConfigError
from opsbot.settings import Secret, Settings

__all__ = [
    "MASK",
    "REQUEST_ID_HEADER",
    "JsonFormatter",
    "Redactor",
    "get_request_id",
    "new_request_id",
    "request_context",
    "request_id_middleware",
    "setup_logging",
]

MASK = "***"
REQUEST_ID_HEADER = "X-Request-Id"

#: Shorter configured values are not searched for: masking every "abc" in every line would make
#: logs useless, and a secret that short protects nothing anyway.
MIN_SECRET_LENGTH = 4

_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("opsbot_request_id", default=None)

#: What follows `Bearer`: something with a digit or a symbol in it, or a long run of letters.
_CREDENTIAL = r"(?:(?=[A-Za-z0-9._~+/=-]*[0-9_~+/=-])[A-Za-z0-9._~+/=-]{6,}|[A-Za-z]{20,})"

#: (pattern, replacement): each keeps the non-secret part (the scheme, the word Bearer) readable.
_SHAPES: tuple[tuple[re.Pattern[str], str], ...] = (
    # PEM private keys (RSA, EC, OPENSSH, PKCS#8, encrypted), whole block; an unterminated one to the end.
    (
        re.compile(
            r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----(?:.*?-----END [A-Z0-9 ]*PRIVATE KEY-----|.*)", re.S
        ),
        MASK,
    ),
    # Slack tokens: bot xoxb-, user xoxp-, app-level xapp-, legacy/workspace/refresh xoxa-/xoxr-/xoxs-/xoxe-.
    (re.compile(r"\bxox[a-z](?:\.[a-z]+)?-[A-Za-z0-9-]+"), MASK),
    (re.compile(r"\bxapp-[A-Za-z0-9-]+"), MASK),
    # GitHub: classic and fine-grained PATs, OAuth, user-to-server, installation (ghs_), refresh.
    (re.compile(r"\bgh[pousr]_[A-Za-z0-9]{16,}"), MASK),
    (re.compile(r"\bgithub_pat_[A-Za-z0-9_]{16,}"), MASK),
    # JSON Web Tokens (GitHub App JWTs, OIDC tokens): three base64url parts, the first two JSON.
    (re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]+"), MASK),
    # Authorization headers, in any casing, wherever they are quoted.
    # A credential has a digit or a symbol in it, or is long; "Bearer tokens go in ..." is prose.
    (re.compile(rf"(?i)\b(bearer)\s+{_CREDENTIAL}"), r"\1 " + MASK),
    (
        re.compile(r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?(?:token|basic)\s+)[A-Za-z0-9._~+/=-]+"),
        r"\1" + MASK,
    ),
    # user:password@ in any URL (postgresql://, https://x-access-token:...@github.com/...).
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s:/@]*:)[^\s@/]+(@)"), r"\1" + MASK + r"\2"),
)


class Redactor:
    """Replaces configured secret values and well-known secret shapes with `***`."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        values = {s for s in secrets if s and len(s) >= MIN_SECRET_LENGTH}
        # Longest first, so a secret that contains another is masked whole.
        self._literals = sorted(values, key=len, reverse=True)

    @classmethod
    def from_settings(cls, settings: Settings) -> Redactor:
        """Every `Secret` field of the settings, plus the password inside OPSBOT_DATABASE_URL."""
        found: list[str] = []
        for value in vars(settings).values():
            if isinstance(value, Secret) and value:
                found.append(value.get())
        password = _url_password(settings.database_url)
        if password:
            found.extend({password, unquote(password)})
        for value in list(found):
            # A multi-line secret (a PEM key) also turns up with escaped newlines, e.g. inside a repr.
            if "\n" in value:
                found.append(value.replace("\n", "\\n"))
        return cls(found)

    def text(self, value: str) -> str:
        for literal in self._literals:
            if literal in value:
                value = value.replace(literal, MASK)
        for pattern, replacement in _SHAPES:
            value = pattern.sub(replacement, value)
        return value

    def value(self, value: Any) -> Any:
        """Strings inside any JSON-like value; other objects by their `str`, which is redacted too."""
        if value is None or isinstance(value, bool | int | float):
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {str(k): self.value(v) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self.value(v) for v in value]
        return self.text(str(value))


def _url_password(url: str) -> str:
    if "://" not in url:
        return ""
    try:
        return urlsplit(url).password or ""
    except ValueError:
        return ""


# ------------------------------------------------------------------------------------------ request ids


def new_request_id() -> str:
    return uuid.uuid4().hex[:16]


def get_request_id() -> str | None:
    return _request_id.get()


@contextlib.contextmanager
def request_context(request_id: str | None = None) -> Iterator[str]:
    """Every log line inside (and in tasks or `copy_context()` threads started inside) carries the id."""
    rid = _clean_request_id(request_id) or new_request_id()
    token = _request_id.set(rid)
    try:
        yield rid
    finally:
        _request_id.reset(token)


_REQUEST_ID_OK = re.compile(r"\A[A-Za-z0-9._:-]{1,64}\Z")


def _clean_request_id(value: str | None) -> str | None:
    """A caller's id is kept only when it is short and plain: it is echoed into every log line."""
    return value if value and _REQUEST_ID_OK.match(value) else None


Handler = Callable[[Any], Awaitable[Any]]


async def request_id_middleware(request: Any, handler: Handler) -> Any:
    """aiohttp middleware: one request id per HTTP request (the caller's `X-Request-Id` if sane),
    echoed in the response header so a user's report can be matched to the log.

    Marked below as a new-style middleware (what `@web.middleware` does), so this module needs no
    aiohttp import and stays usable without the web stack.
    """
    with request_context(request.headers.get(REQUEST_ID_HEADER)) as rid:
        response = await handler(request)
        with contextlib.suppress(AttributeError, RuntimeError, TypeError):
            response.headers[REQUEST_ID_HEADER] = rid
        return response


setattr(request_id_middleware, "__middleware_version__", 1)  # noqa: B010 (a function attribute mypy would refuse)


# ------------------------------------------------------------------------------------------ formatter

#: Attributes every LogRecord has; anything else on a record came from `extra=` and is logged as a field.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id, then the extras."""

    def __init__(self, redactor: Redactor | None = None) -> None:
        super().__init__()
        self.redactor = redactor or Redactor()

    def format(self, record: logging.LogRecord) -> str:
        r = self.redactor
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": r.text(record.getMessage()),
            "request_id": getattr(record, "request_id", None) or _request_id.get(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in out and not key.startswith("_"):
                out[key] = r.value(value)
        if record.exc_info:
            out["exception"] = r.text(self.formatException(record.exc_info))
        elif record.exc_text:
            out["exception"] = r.text(record.exc_text)
        if record.stack_info:
            out["stack"] = r.text(self.formatStack(record.stack_info))
        return json.dumps(out, ensure_ascii=False, default=lambda o: r.text(str(o)))


def _level(name: str) -> int:
    level = logging.getLevelName(name.strip().upper())
    if not isinstance(level, int):
        raise ConfigError(f"OPSBOT_LOG_LEVEL: expected DEBUG, INFO, WARNING or ERROR, got {name!r}")
    return level


def setup_logging(settings: Settings, stream: IO[str] | None = None) -> logging.Handler:
    """Make the root logger write redacted JSON lines (to stderr unless `stream`) at OPSBOT_LOG_LEVEL.

    Every handler already on the root logger is replaced, so no plain-text copy of a line (which
    would not be redacted) is written next to the JSON one.
    """
    level = _level(settings.log_level)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter(Redactor.from_settings(settings)))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("opsbot").setLevel(level)
    logging.captureWarnings(True)
    return handler
