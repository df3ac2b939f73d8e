"""Request, audit, approval, inbox/outbox and kv storage: SQLite by default, PostgreSQL by URL.

`open_store` is the only entry point the rest of opsbot needs; it returns something that satisfies
`opsbot.core.ports.Store`, with the schema already migrated.
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

from opsbot.core.ports import Store
from opsbot.errors import ConfigError

__all__ = ["open_store"]

_POSTGRES_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg")


def open_store(url: str) -> Store:
    """Open (and migrate) the store named by OPSBOT_DATABASE_URL.

    `sqlite:///abs/path.db` (parent directories are created), `sqlite:///:memory:` (tests, one
    process), or `postgresql://user:pass@host:port/db?sslmode=...` (libpq URI, handed to psycopg).
    """
    text = (url or "").strip()
    scheme, sep, _ = text.partition("://")
    scheme = scheme.lower()
    if not sep:
        raise ConfigError(
            "OPSBOT_DATABASE_URL must look like sqlite:///path/to/opsbot.db or postgresql://host/db "
            "(no scheme found)"
        )
    if scheme == "sqlite":
        from opsbot.store.sqlite import MEMORY, SqliteStore

        rest = text[len("sqlite://") :]
        path = unquote(urlsplit("sqlite://" + rest).path) if "?" in rest else unquote(rest)
        if path in ("/" + MEMORY, MEMORY):
            return SqliteStore(MEMORY)
        if not path.startswith("/") or path == "/":
            raise ConfigError(
                "OPSBOT_DATABASE_URL for SQLite needs an absolute path: sqlite:///abs/path/opsbot.db "
                "(three slashes, then the path)"
            )
        return SqliteStore(path)
    if scheme in _POSTGRES_SCHEMES:
        from opsbot.store.postgres import PostgresStore

        if scheme == "postgresql+psycopg":
            text = "postgresql" + text[len(scheme) :]
        return PostgresStore(text)
    raise ConfigError(
        f"unsupported database URL scheme {scheme!r} in OPSBOT_DATABASE_URL; "
        "use sqlite:///abs/path/opsbot.db or postgresql://user@host:5432/db"
    )
