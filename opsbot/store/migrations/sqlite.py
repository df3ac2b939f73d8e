"""SQLite schema. Times are ISO-8601 UTC text with microseconds, so text order is time order."""

from __future__ import annotations

from opsbot.store.migrations import Migration, check_sequence

SCHEMA_VERSION_DDL = """
CREATE TABLE IF NOT EXISTS schema_version (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at TEXT NOT NULL
) STRICT
"""

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "requests, transitions, approvals, inbox, outbox, kv",
        (
            """
            CREATE TABLE requests (
                id               INTEGER PRIMARY KEY AUTOINCREMENT,
                intent_key       TEXT NOT NULL,
                command          TEXT NOT NULL,
                verb             TEXT NOT NULL,
                app              TEXT NOT NULL DEFAULT '',
                env              TEXT NOT NULL DEFAULT '',
                requester        TEXT NOT NULL,
                state            TEXT NOT NULL,
                forge            TEXT NOT NULL DEFAULT 'local',
                branch           TEXT NOT NULL DEFAULT '',
                base_branch      TEXT NOT NULL DEFAULT '',
                base_sha         TEXT NOT NULL DEFAULT '',
                head_sha         TEXT NOT NULL DEFAULT '',
                pr_number        INTEGER,
                pr_url           TEXT NOT NULL DEFAULT '',
                merge_sha        TEXT NOT NULL DEFAULT '',
                title            TEXT NOT NULL DEFAULT '',
                summary          TEXT NOT NULL DEFAULT '',
                channel          TEXT NOT NULL DEFAULT '',
                thread_ts        TEXT NOT NULL DEFAULT '',
                fields           TEXT NOT NULL DEFAULT '[]',
                approvals_needed INTEGER NOT NULL DEFAULT 0,
                created_at       TEXT NOT NULL,
                updated_at       TEXT NOT NULL,
                merged_at        TEXT,
                deployed_at      TEXT
            ) STRICT
            """,
            "CREATE INDEX requests_intent_state ON requests (intent_key, state)",
            "CREATE INDEX requests_pr ON requests (forge, pr_number)",
            "CREATE INDEX requests_branch ON requests (branch)",
            "CREATE INDEX requests_app_env ON requests (app, env)",
            "CREATE INDEX requests_state ON requests (state)",
            """
            CREATE TABLE transitions (
                id         INTEGER PRIMARY KEY AUTOINCREMENT,
                request_id INTEGER NOT NULL REFERENCES requests (id) ON DELETE CASCADE,
                from_state TEXT,
                to_state   TEXT NOT NULL,
                actor      TEXT NOT NULL,
                detail     TEXT NOT NULL DEFAULT '',
                at         TEXT NOT NULL
            ) STRICT
            """,
            "CREATE INDEX transitions_request ON transitions (request_id, id)",
            """
            CREATE TABLE approvals (
                request_id INTEGER NOT NULL REFERENCES requests (id) ON DELETE CASCADE,
                approver   TEXT NOT NULL,
                source     TEXT NOT NULL,
                at         TEXT NOT NULL,
                PRIMARY KEY (request_id, approver)
            ) STRICT
            """,
            """
            CREATE TABLE inbox (
                id          INTEGER PRIMARY KEY AUTOINCREMENT,
                source      TEXT NOT NULL,
                key         TEXT NOT NULL,
                payload     TEXT NOT NULL,
                received_at TEXT NOT NULL,
                done_at     TEXT,
                UNIQUE (source, key)
            ) STRICT
            """,
            "CREATE INDEX inbox_pending ON inbox (id) WHERE done_at IS NULL",
            """
            CREATE TABLE outbox (
                id         INTEGER PRIMARY KEY AUTOINCREMENT,
                key        TEXT NOT NULL UNIQUE,
                kind       TEXT NOT NULL,
                payload    TEXT NOT NULL,
                attempts   INTEGER NOT NULL DEFAULT 0,
                next_at    TEXT NOT NULL,
                created_at TEXT NOT NULL,
                done_at    TEXT,
                result     TEXT,
                last_error TEXT NOT NULL DEFAULT ''
            ) STRICT
            """,
            "CREATE INDEX outbox_due ON outbox (next_at, id) WHERE done_at IS NULL",
            """
            CREATE TABLE kv (
                key        TEXT PRIMARY KEY,
                value      TEXT NOT NULL,
                updated_at TEXT NOT NULL
            ) STRICT
            """,
        ),
    ),
    Migration(
        2,
        "outbox claims, so several replicas never post one item twice",
        (
            "ALTER TABLE outbox ADD COLUMN claimed_by TEXT NOT NULL DEFAULT ''",
            "ALTER TABLE outbox ADD COLUMN claimed_until TEXT",
        ),
    ),
    Migration(
        3,
        "one open request per intent, one thread root per request, approvals bound to head and effect",
        (
            # Rows from before this rule may hold duplicates (the bug the rule fixes): the newest
            # open request of an intent stays, older ones are superseded with an audit line.
            """
            INSERT INTO transitions (request_id, from_state, to_state, actor, detail, at)
            SELECT r.id, r.state, 'superseded', 'opsbot', 'a newer open request exists for this intent', r.updated_at
            FROM requests r
            WHERE r.state IN ('proposed', 'approved') AND EXISTS (
                SELECT 1 FROM requests n
                WHERE n.intent_key = r.intent_key AND n.state IN ('proposed', 'approved') AND n.id > r.id
            )
            """,
            """
            UPDATE requests SET state = 'superseded'
            WHERE state IN ('proposed', 'approved') AND EXISTS (
                SELECT 1 FROM requests n
                WHERE n.intent_key = requests.intent_key AND n.state IN ('proposed', 'approved')
                  AND n.id > requests.id
            )
            """,
            "CREATE UNIQUE INDEX requests_one_open_intent ON requests (intent_key) "
            "WHERE state IN ('proposed', 'approved')",
            "ALTER TABLE requests ADD COLUMN thread_claim TEXT NOT NULL DEFAULT ''",
            "ALTER TABLE approvals ADD COLUMN head_sha TEXT NOT NULL DEFAULT ''",
            "ALTER TABLE approvals ADD COLUMN effect TEXT NOT NULL DEFAULT '[]'",
        ),
    ),
    Migration(
        4,
        "append-only audit log; freezes, locks and revert claims (policies)",
        (
            """
            CREATE TABLE audit (
                id         INTEGER PRIMARY KEY AUTOINCREMENT,
                at         TEXT NOT NULL,
                actor      TEXT NOT NULL,
                action     TEXT NOT NULL,
                request_id TEXT NOT NULL DEFAULT '',
                pr_number  INTEGER,
                app        TEXT NOT NULL DEFAULT '',
                env        TEXT NOT NULL DEFAULT '',
                reason     TEXT NOT NULL DEFAULT '',
                detail     TEXT NOT NULL DEFAULT ''
            ) STRICT
            """,
            "CREATE INDEX audit_at ON audit (at)",
            "CREATE INDEX audit_app_env ON audit (app, env, id)",
            "CREATE INDEX audit_request ON audit (request_id, id)",
            # Append-only below opsbot too: a hand-typed UPDATE or DELETE is refused by the database.
            """
            CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
            BEGIN SELECT RAISE(ABORT, 'audit rows are append-only'); END
            """,
            """
            CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
            BEGIN SELECT RAISE(ABORT, 'audit rows are append-only'); END
            """,
            """
            CREATE TABLE freezes (
                id         INTEGER PRIMARY KEY AUTOINCREMENT,
                env        TEXT NOT NULL,
                set_by     TEXT NOT NULL,
                reason     TEXT NOT NULL DEFAULT '',
                started_at TEXT NOT NULL,
                ends_at    TEXT,
                lifted_at  TEXT,
                lifted_by  TEXT NOT NULL DEFAULT ''
            ) STRICT
            """,
            "CREATE INDEX freezes_env ON freezes (env, lifted_at)",
            """
            CREATE TABLE locks (
                id          INTEGER PRIMARY KEY AUTOINCREMENT,
                app         TEXT NOT NULL,
                env         TEXT NOT NULL,
                holder      TEXT NOT NULL,
                reason      TEXT NOT NULL DEFAULT '',
                link        TEXT NOT NULL DEFAULT '',
                since       TEXT NOT NULL,
                released_at TEXT,
                released_by TEXT NOT NULL DEFAULT ''
            ) STRICT
            """,
            "CREATE UNIQUE INDEX locks_held ON locks (app, env) WHERE released_at IS NULL",
            """
            CREATE TABLE reverts (
                request_id        TEXT PRIMARY KEY,
                revert_request_id TEXT NOT NULL DEFAULT '',
                at                TEXT NOT NULL
            ) STRICT
            """,
            "CREATE INDEX reverts_revert ON reverts (revert_request_id)",
        ),
    ),
)

check_sequence(MIGRATIONS)
