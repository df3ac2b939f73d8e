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
    """Catch a mis-numbered list at import time rather than as a half-migrated database.

    Versions must rise strictly but may leave a gap: numbers are handed out to parallel branches
    (e.g. 3 to one, 4 to another), so a build may carry 4 before 3 lands. The runner applies every
    version a database has not recorded, not only those above its highest, so 3 still runs later.
    """
    previous = 0
    for migration in migrations:
        if migration.version <= previous:
            raise RuntimeError(
                f"migration {migration.name!r} has version {migration.version}, "
                f"expected more than {previous}"
            )
        previous = migration.version
