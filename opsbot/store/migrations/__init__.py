"""Schema history for both backends, kept as Python so it ships inside the wheel with no package-data.

Each backend has its own list because the column types differ (SQLite stores UTC text and JSON
text, PostgreSQL uses TIMESTAMPTZ and JSONB); the version numbers of the two lists move together
so one number describes the same logical schema everywhere.

Rules for adding a migration: append, never edit an applied one; every statement must be valid
inside a transaction (all of a run's migrations commit together or not at all).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


def check_sequence(migrations: tuple[Migration, ...]) -> None:
    """Catch a mis-numbered list at import time rather than as a half-migrated database."""
    for expected, migration in enumerate(migrations, start=1):
        if migration.version != expected:
            raise RuntimeError(
                f"migration {migration.name!r} has version {migration.version}, expected {expected}"
            )
