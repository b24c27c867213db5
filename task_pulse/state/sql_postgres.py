"""Every statement the shared state database runs, by name: PostgreSQL's dialect (SQLite's, for the
local state database, is in sql_sqlite.py). shared.py runs them; the schema's version and what each
version adds to the one before are here too.
"""

from __future__ import annotations

from task_pulse.records import PINGS

SCHEMA_VERSION = 4
HOST_ROLE, DELIVERER_ROLE = "task_pulse_host", "task_pulse_deliverer"  # group roles (see `task-pulse shared grant`)
# What a deliverer may change of a notification: how it is being delivered, never what it says or whose it is.
DELIVERY_COLUMNS = "claimed_by, claim_until, delivered_at, delivered_by, attempts, last_error, retry_at, paced_until"
# What a host may write into a notification: the notification itself, never how it is delivered.
HOST_COLUMNS = "host, key, task_id, task_name, kind, created_at, text, data"
PINGS_SQL = ", ".join(f"'{kind}'" for kind in sorted(PINGS))
CHANNEL = "task_pulse"  # LISTEN/NOTIFY channel: rows were added
# Task snapshots or runs changed (the board's doorbell; a courier need not wake for a heartbeat).
TASKS_CHANNEL = "task_pulse_tasks"


class PG:
    """Every statement the shared database runs, by name (PostgreSQL's dialect)."""

    # Versioned: MIGRATIONS[n] takes a database from version n-1 to n, in one transaction.
    MIGRATIONS: dict[int, list[str]] = {1: [
        """
        CREATE TABLE task_pulse.tasks (
            host        TEXT NOT NULL,
            task_id     TEXT NOT NULL,
            snapshot    TEXT NOT NULL,          -- the task as last announced: its file's JSON text
            status      TEXT,                   -- NULL while the host has not parsed it yet (first start)
            stalled_for TEXT,
            stall_at    DOUBLE PRECISION,
            ended_at    DOUBLE PRECISION,
            gone_at     DOUBLE PRECISION,
            version     BIGINT NOT NULL,        -- the host's write count for the task: an older copy never wins
            synced_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
            PRIMARY KEY (host, task_id)
        )""",
        "CREATE INDEX tasks_status ON task_pulse.tasks (status, ended_at) WHERE gone_at IS NULL",
        "CREATE INDEX tasks_stall ON task_pulse.tasks (stall_at) WHERE stall_at IS NOT NULL",
        "CREATE INDEX tasks_stalled ON task_pulse.tasks (host, task_id) WHERE stalled_for IS NOT NULL "
        "AND gone_at IS NULL",
        """
        CREATE TABLE task_pulse.notifications (
            seq          BIGSERIAL PRIMARY KEY,
            host         TEXT NOT NULL,
            key          TEXT NOT NULL,
            task_id      TEXT NOT NULL,
            task_name    TEXT NOT NULL,
            kind         TEXT NOT NULL,
            created_at   TEXT NOT NULL,          -- when its daemon queued it (ISO 8601 UTC, ms)
            stored_at    TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),  -- when it arrived here
            text         TEXT NOT NULL,
            data         TEXT NOT NULL,
            delivered_at TEXT,
            delivered_by TEXT,
            attempts     INTEGER NOT NULL DEFAULT 0,
            last_error   TEXT,
            claimed_by   TEXT,
            claim_until  DOUBLE PRECISION,
            retry_at     DOUBLE PRECISION,
            UNIQUE (host, key)
        )""",
        "CREATE INDEX notifications_pending ON task_pulse.notifications (seq) WHERE delivered_at IS NULL",
        "CREATE INDEX notifications_task_pending ON task_pulse.notifications (host, task_id, seq) "
        "WHERE delivered_at IS NULL",
        "CREATE INDEX notifications_delivered ON task_pulse.notifications (delivered_at) "
        "WHERE delivered_at IS NOT NULL",
        """
        CREATE TABLE task_pulse.cards (
            host        TEXT NOT NULL,
            task_id     TEXT NOT NULL,
            sink        TEXT NOT NULL,
            message_id  TEXT NOT NULL,
            started_key TEXT,
            text        TEXT NOT NULL,
            updated_at  TEXT NOT NULL,
            PRIMARY KEY (host, task_id)
        )""",
    ], 2: [
        # As in SQLite (sql_sqlite.py): the chat's pace, and sends written to a gateway not yet answered.
        "ALTER TABLE task_pulse.notifications ADD COLUMN paced_until DOUBLE PRECISION",
        "ALTER TABLE task_pulse.cards ADD COLUMN due_at DOUBLE PRECISION",
        """
        CREATE TABLE task_pulse.handoffs (
            host        TEXT NOT NULL,
            task_id     TEXT NOT NULL,
            sink        TEXT NOT NULL,
            key         TEXT NOT NULL,
            seqs        TEXT NOT NULL,
            text        TEXT NOT NULL,
            card        BOOLEAN NOT NULL,
            started_key TEXT,
            boot_id     TEXT,
            written_at  DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (host, task_id)
        )""",
    ], 3: [  # the history of finished runs (task_pulse/history), as each host's state db keeps it
        """
        CREATE TABLE task_pulse.runs (
            host        TEXT NOT NULL,
            key         TEXT NOT NULL,
            task_id     TEXT NOT NULL,
            name        TEXT NOT NULL,
            outcome     TEXT NOT NULL,
            at          DOUBLE PRECISION NOT NULL,
            started_at  DOUBLE PRECISION,
            finished_at DOUBLE PRECISION,
            steps       TEXT NOT NULL,
            PRIMARY KEY (host, key)
        )""",
        "CREATE INDEX runs_name ON task_pulse.runs (host, name, at)",
    ], 4: [
        # Row-level security (docs/shared-database.md): a host's role (a member of task_pulse_host, named as the
        # host: --host-name) sees and writes its own rows only; a deliverer (a member of task_pulse_deliverer)
        # sees every host's notifications and tasks, and writes only how they are delivered (column grants,
        # `GRANTS`), cards and handoffs. The schema's owner is not bound by it: one role for every host, as
        # before, trusts every host.
        f"""
        CREATE FUNCTION task_pulse.is_deliverer() RETURNS boolean LANGUAGE sql STABLE AS $$
            SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{DELIVERER_ROLE}'
                           AND pg_has_role(current_user, oid, 'MEMBER'))
        $$""",
        *(f"ALTER TABLE task_pulse.{t} ENABLE ROW LEVEL SECURITY" for t in ("tasks", "notifications", "cards",
                                                                             "handoffs", "runs")),
        *(f"CREATE POLICY own_rows ON task_pulse.{t} USING (host = current_user) WITH CHECK (host = current_user)"
          for t in ("tasks", "runs")),
        *(f"CREATE POLICY deliverers_read ON task_pulse.{t} FOR SELECT USING (task_pulse.is_deliverer())"
          for t in ("tasks", "runs")),
        "CREATE POLICY own_rows ON task_pulse.notifications USING (host = current_user) "
        "WITH CHECK (host = current_user)",
        *(f"CREATE POLICY deliverers ON task_pulse.{t} USING (task_pulse.is_deliverer()) "
          "WITH CHECK (task_pulse.is_deliverer())" for t in ("notifications", "cards", "handoffs")),
    ]}
    # What `task-pulse shared grant` runs (as the schema's owner): the two group roles, what each may do, then the
    # membership of one role. Idempotent: run it again for every host or deliverer added.
    GRANTS = [
        *(f"DO $$ BEGIN CREATE ROLE {role} NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$"
          for role in (HOST_ROLE, DELIVERER_ROLE)),
        f"GRANT USAGE ON SCHEMA task_pulse TO {HOST_ROLE}, {DELIVERER_ROLE}",
        f"GRANT SELECT ON task_pulse.meta TO {HOST_ROLE}, {DELIVERER_ROLE}",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON task_pulse.tasks, task_pulse.runs TO {HOST_ROLE}",
        f"GRANT SELECT, DELETE ON task_pulse.notifications TO {HOST_ROLE}",
        f"GRANT INSERT ({HOST_COLUMNS}) ON task_pulse.notifications TO {HOST_ROLE}",
        f"GRANT USAGE ON SEQUENCE task_pulse.notifications_seq_seq TO {HOST_ROLE}",
        f"GRANT SELECT ON task_pulse.tasks, task_pulse.runs TO {DELIVERER_ROLE}",
        f"GRANT SELECT, DELETE ON task_pulse.notifications TO {DELIVERER_ROLE}",
        f"GRANT UPDATE ({DELIVERY_COLUMNS}) ON task_pulse.notifications TO {DELIVERER_ROLE}",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON task_pulse.cards, task_pulse.handoffs TO {DELIVERER_ROLE}",
    ]
    GRANT_MEMBER = "GRANT {group} TO {role}"  # identifiers: composed with psycopg.sql, never by hand
    # Who this connection is, and whether row-level security binds it (the owner and superusers it does not).
    WHO = """
    SELECT current_user, r.rolsuper OR r.rolbypassrls OR c.relowner = r.oid
    FROM pg_roles AS r, pg_class AS c
    WHERE r.rolname = current_user AND c.oid = 'task_pulse.notifications'::regclass
    """
    SCHEMA_LOCK = "SELECT pg_advisory_xact_lock(hashtext('task_pulse.schema'))"  # one migrator at a time
    META = """
    CREATE SCHEMA IF NOT EXISTS task_pulse;
    CREATE TABLE IF NOT EXISTS task_pulse.meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)
    """
    HAS_META = "SELECT to_regclass('task_pulse.meta') IS NOT NULL"
    GET_VERSION = "SELECT value FROM task_pulse.meta WHERE name = 'schema_version'"
    SET_VERSION = """
    INSERT INTO task_pulse.meta (name, value) VALUES ('schema_version', %s)
    ON CONFLICT (name) DO UPDATE SET value = excluded.value
    """

    # -- the forwarder's side ------------------------------------------------------------------------
    PUT_TASK = """
    INSERT INTO task_pulse.tasks (host, task_id, snapshot, status, stalled_for, stall_at, ended_at, gone_at, version)
    VALUES (%(host)s, %(task_id)s, %(snapshot)s, %(status)s, %(stalled_for)s, %(stall_at)s, %(ended_at)s,
            %(gone_at)s, %(version)s)
    ON CONFLICT (host, task_id) DO UPDATE SET
        snapshot = excluded.snapshot, status = excluded.status, stalled_for = excluded.stalled_for,
        stall_at = excluded.stall_at, ended_at = excluded.ended_at, gone_at = excluded.gone_at,
        version = excluded.version, synced_at = now()
    WHERE task_pulse.tasks.version < excluded.version
    """
    PUT_NOTIFICATION = """
    INSERT INTO task_pulse.notifications (host, key, task_id, task_name, kind, created_at, text, data)
    VALUES (%(host)s, %(key)s, %(task_id)s, %(task_name)s, %(kind)s, %(created_at)s, %(text)s, %(data)s)
    ON CONFLICT (host, key) DO NOTHING
    """
    PUT_RUN = """
    INSERT INTO task_pulse.runs (host, key, task_id, name, outcome, at, started_at, finished_at, steps)
    VALUES (%(host)s, %(key)s, %(task_id)s, %(name)s, %(outcome)s, %(at)s, %(started_at)s, %(finished_at)s,
            %(steps)s)
    ON CONFLICT (host, key) DO NOTHING
    """
    RINGS = f"NOTIFY {CHANNEL}"
    LISTEN = f"LISTEN {CHANNEL}"
    TASKS_RING = f"NOTIFY {TASKS_CHANNEL}"
    LISTEN_TASKS = f"LISTEN {TASKS_CHANNEL}"

    # -- the deliverers' side ------------------------------------------------------------------------
    _COLUMNS = "seq, key, task_id, task_name, kind, created_at, text, data, attempts, host"
    COUNT_PENDING = "SELECT count(*) FROM task_pulse.notifications WHERE delivered_at IS NULL"
    CLAIMABLE = f"""
    SELECT {_COLUMNS} FROM task_pulse.notifications
    WHERE delivered_at IS NULL AND (claim_until IS NULL OR claim_until < %(now)s)
    ORDER BY seq LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
    """
    CLAIM = """
    UPDATE task_pulse.notifications SET claimed_by = %(owner)s, claim_until = %(until)s WHERE seq = ANY(%(seqs)s)
    """
    MARK_DELIVERED = """
    UPDATE task_pulse.notifications SET delivered_at = %(at)s, delivered_by = %(by)s, claimed_by = NULL,
        claim_until = NULL
    WHERE seq = ANY(%(seqs)s) AND claimed_by = %(owner)s AND delivered_at IS NULL
    """
    RELEASE = """
    UPDATE task_pulse.notifications SET claimed_by = NULL, claim_until = NULL
    WHERE seq = ANY(%(seqs)s) AND claimed_by = %(owner)s
    """
    RETRY_LATER = """
    UPDATE task_pulse.notifications SET claimed_by = NULL, claim_until = NULL, attempts = attempts + %(count)s,
        last_error = %(error)s, retry_at = %(retry_at)s, paced_until = NULL
    WHERE seq = ANY(%(seqs)s) AND claimed_by = %(owner)s
    """
    DEFER = """
    UPDATE task_pulse.notifications SET claimed_by = NULL, claim_until = NULL, retry_at = NULL,
        paced_until = %(until)s
    WHERE seq = ANY(%(seqs)s) AND claimed_by = %(owner)s
    """
    GIVE_UP = """
    UPDATE task_pulse.notifications SET claimed_by = NULL, claim_until = NULL,
        attempts = greatest(attempts + 1, %(max_attempts)s), last_error = %(error)s, retry_at = NULL,
        paced_until = NULL
    WHERE seq = ANY(%(seqs)s) AND claimed_by = %(owner)s
    """
    # As in SQLite (outbox.py): the oldest row a sink may try now whose task has no older row still
    # undelivered; locked, so that two couriers (of any hosts) never take the same task at once.
    SINK_CLAIMABLE = f"""
    SELECT {_COLUMNS} FROM task_pulse.notifications AS n
    WHERE n.delivered_at IS NULL AND n.attempts < %(max_attempts)s
      AND (n.claim_until IS NULL OR n.claim_until < %(now)s) AND (n.retry_at IS NULL OR n.retry_at <= %(now)s)
      AND (n.paced_until IS NULL OR n.paced_until <= %(now)s)
      AND NOT EXISTS (
          SELECT 1 FROM task_pulse.notifications AS p
          WHERE p.host = n.host AND p.task_id = n.task_id AND p.seq < n.seq AND p.delivered_at IS NULL
            AND p.attempts < %(max_attempts)s
            AND NOT (n.kind IN ({PINGS_SQL}) AND p.paced_until > %(now)s AND p.retry_at IS NULL
                     AND (p.claim_until IS NULL OR p.claim_until < %(now)s)))
    ORDER BY n.seq LIMIT 1
    FOR UPDATE SKIP LOCKED
    """
    TASK_BATCH = f"""
    SELECT {_COLUMNS} FROM task_pulse.notifications
    WHERE host = %(host)s AND task_id = %(task_id)s AND delivered_at IS NULL AND attempts < %(max_attempts)s
      AND (claim_until IS NULL OR claim_until < %(now)s)
    ORDER BY seq LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
    """
    SINK_NEXT_FREE = """
    SELECT min(at) FROM (
        SELECT greatest(coalesce(retry_at, 0), coalesce(claim_until, 0), coalesce(paced_until, 0)) AS at
        FROM task_pulse.notifications
        WHERE delivered_at IS NULL AND attempts < %(max_attempts)s
          AND greatest(coalesce(retry_at, 0), coalesce(claim_until, 0), coalesce(paced_until, 0)) > %(now)s
        UNION ALL SELECT due_at FROM task_pulse.cards WHERE due_at > %(now)s) AS due
    """
    RENEW = """
    UPDATE task_pulse.notifications SET claim_until = %(until)s WHERE seq = ANY(%(seqs)s) AND claimed_by = %(owner)s
    """
    # A row no daemon wrote as it is (see records.queued): never delivered, never claimed again, kept with why.
    SET_ASIDE = """
    UPDATE task_pulse.notifications SET delivered_at = %(at)s, delivered_by = 'malformed', last_error = %(error)s,
        claimed_by = NULL, claim_until = NULL
    WHERE seq = %(seq)s AND delivered_at IS NULL
    """
    REARM = """
    UPDATE task_pulse.notifications SET attempts = 0, retry_at = NULL
    WHERE delivered_at IS NULL AND attempts >= %(max_attempts)s AND claimed_by IS NULL
    """
    RELEASE_OWNED = """
    UPDATE task_pulse.notifications SET claimed_by = NULL, claim_until = NULL
    WHERE delivered_at IS NULL AND starts_with(claimed_by, %(prefix)s)
    """
    GET_CARD = """
    SELECT message_id, text, started_key FROM task_pulse.cards WHERE host = %(host)s AND task_id = %(task_id)s
      AND sink = %(sink)s
    """
    PUT_CARD = """
    INSERT INTO task_pulse.cards (host, task_id, sink, message_id, started_key, text, updated_at)
    VALUES (%(host)s, %(task_id)s, %(sink)s, %(message_id)s, %(started_key)s, %(text)s, %(at)s)
    ON CONFLICT (host, task_id) DO UPDATE SET sink = excluded.sink, message_id = excluded.message_id,
        started_key = excluded.started_key, text = excluded.text, updated_at = excluded.updated_at, due_at = NULL
    """
    DROP_CARD = "DELETE FROM task_pulse.cards WHERE host = %(host)s AND task_id = %(task_id)s"
    OWE_EDIT = "UPDATE task_pulse.cards SET due_at = %(at)s WHERE host = %(host)s AND task_id = %(task_id)s"
    OWED_CARD = """
    SELECT host, task_id FROM task_pulse.cards AS c WHERE due_at <= %(now)s
      AND NOT EXISTS (SELECT 1 FROM task_pulse.notifications AS n
                      WHERE n.host = c.host AND n.task_id = c.task_id AND n.delivered_at IS NULL)
    ORDER BY due_at LIMIT 1
    FOR UPDATE SKIP LOCKED
    """
    PURGE_CARDS = """
    DELETE FROM task_pulse.cards AS c
    WHERE NOT EXISTS (SELECT 1 FROM task_pulse.tasks AS t WHERE t.host = c.host AND t.task_id = c.task_id)
    """
    GET_HANDOFF = """
    SELECT key, sink, seqs, text, card, started_key, boot_id, written_at FROM task_pulse.handoffs
    WHERE host = %(host)s AND task_id = %(task_id)s
    """
    PUT_HANDOFF = """
    INSERT INTO task_pulse.handoffs (host, task_id, sink, key, seqs, text, card, started_key, boot_id, written_at)
    VALUES (%(host)s, %(task_id)s, %(sink)s, %(key)s, %(seqs)s, %(text)s, %(card)s, %(started_key)s, %(boot_id)s,
            %(written_at)s)
    ON CONFLICT (host, task_id) DO UPDATE SET sink = excluded.sink, key = excluded.key, seqs = excluded.seqs,
        text = excluded.text, card = excluded.card, started_key = excluded.started_key, boot_id = excluded.boot_id,
        written_at = excluded.written_at
    """
    DROP_HANDOFF = """
    DELETE FROM task_pulse.handoffs WHERE host = %(host)s AND task_id = %(task_id)s AND key = %(key)s
    """
    PURGE_HANDOFFS = """
    DELETE FROM task_pulse.handoffs AS h
    WHERE NOT EXISTS (SELECT 1 FROM task_pulse.notifications AS n
                      WHERE n.host = h.host AND n.task_id = h.task_id AND n.delivered_at IS NULL)
    """
    TASK_VIEW = """
    SELECT snapshot, stalled_for FROM task_pulse.tasks WHERE host = %(host)s AND task_id = %(task_id)s
      AND status IS NOT NULL
    """
    _RUN_COLUMNS = "key, task_id, name, outcome, at, started_at, finished_at, steps"
    # The latest %(limit)s done runs of each (host, name) asked for (a host's runs are its own history).
    DONE_RUNS_OF = f"""
    SELECT host, {_RUN_COLUMNS} FROM (
        SELECT *, row_number() OVER (PARTITION BY host, name ORDER BY at DESC, key DESC) AS nth FROM task_pulse.runs
        WHERE outcome = 'done'
          AND (host, name) IN (SELECT * FROM unnest(%(hosts)s::text[], %(names)s::text[]))) AS latest
    WHERE nth <= %(limit)s
    """

    # -- housekeeping (any daemon's cleanup) -----------------------------------------------------------
    PURGE_DELIVERED = """
    DELETE FROM task_pulse.notifications WHERE delivered_at IS NOT NULL AND delivered_at < %(before)s
    """
    PURGE_TASKS = "DELETE FROM task_pulse.tasks WHERE ended_at < %(before)s OR gone_at < %(before)s"
    # A host's runs: those older than its history keeps, and those past the newest %(keep)s of a name.
    PURGE_RUNS = """
    DELETE FROM task_pulse.runs AS r USING (
        SELECT key, at, row_number() OVER (PARTITION BY name ORDER BY at DESC, key DESC) AS nth
        FROM task_pulse.runs WHERE host = %(host)s) AS x
    WHERE r.host = %(host)s AND r.key = x.key AND (x.nth > %(keep)s OR x.at < %(before)s)
    """

    # -- `task-pulse status --all-hosts` -----------------------------------------------------------------
    COUNT_BY_STATUS = "SELECT status, count(*) FROM task_pulse.tasks WHERE gone_at IS NULL GROUP BY status"
    COUNT_STALLED = """
    SELECT count(*) FROM task_pulse.tasks
    WHERE gone_at IS NULL AND status = 'running' AND (stalled_for IS NOT NULL OR stall_at < %(now)s)
    """
    PICK_STALLED = """
    SELECT host, task_id FROM task_pulse.tasks
    WHERE gone_at IS NULL AND status = 'running' AND (stalled_for IS NOT NULL OR stall_at < %(now)s)
    ORDER BY host, task_id LIMIT %(limit)s
    """
    PICK_ENDED = """
    SELECT host, task_id FROM task_pulse.tasks WHERE gone_at IS NULL AND status = %(status)s
    ORDER BY ended_at DESC LIMIT %(limit)s
    """
    PICK_RUNNING = """
    SELECT host, task_id FROM task_pulse.tasks WHERE stall_at IS NOT NULL ORDER BY stall_at DESC LIMIT %(limit)s
    """
    SNAPSHOTS = """
    SELECT host, task_id, snapshot FROM task_pulse.tasks
    WHERE (host, task_id) IN (SELECT * FROM unnest(%(hosts)s::text[], %(ids)s::text[]))
    """

    # -- the board's detail of one task (task_pulse/board): read-only ---------------------------------------
    TASK_NOTIFICATIONS = """
    SELECT seq, kind, created_at, text, delivered_at, delivered_by, attempts, last_error FROM task_pulse.notifications
    WHERE host = %(host)s AND task_id = %(task_id)s ORDER BY seq DESC LIMIT %(limit)s
    """
    TASK_CARDS = """
    SELECT sink, message_id, updated_at FROM task_pulse.cards WHERE host = %(host)s AND task_id = %(task_id)s
    """
    RUNS_OF = f"""
    SELECT {_RUN_COLUMNS} FROM task_pulse.runs WHERE host = %(host)s AND name = %(name)s
    ORDER BY at DESC, key DESC LIMIT %(limit)s
    """
