"""Every statement the local state database runs, by name: SQLite's dialect (PostgreSQL's, for the
shared state database, is in sql_postgres.py). outbox.py runs them; the schema's version and what each
version adds to the one before are here too.
"""

from __future__ import annotations

from task_pulse.records import PINGS

PINGS_SQL = ", ".join(f"'{kind}'" for kind in sorted(PINGS))  # kinds are our own words: no quoting needed

SCHEMA_VERSION = 6
# The history of finished runs (task_pulse/history): written by the worker only, outliving the task files.
# Bounded per task name and by age (`Outbox.record`, `Outbox.purge_runs`).
RUNS_TABLE = """
CREATE TABLE IF NOT EXISTS runs (
    key         TEXT PRIMARY KEY,   -- task id, start, run counter: a run recorded twice is stored once
    task_id     TEXT NOT NULL,
    name        TEXT NOT NULL,      -- runs are matched by task name
    outcome     TEXT NOT NULL,      -- done | error
    at          REAL NOT NULL,      -- unix time it started (else finished): orders and ages runs
    started_at  REAL,
    finished_at REAL,
    steps       TEXT NOT NULL,      -- JSON: [{name, status, seconds, silence}] in step order
    shared      INTEGER NOT NULL DEFAULT 0  -- 1 once a shared state db has it (daemon/forwarder.py)
)"""
RUNS_INDEX = "CREATE INDEX IF NOT EXISTS runs_name ON runs (name, at)"
# What each version adds to the one before, for a database made by an older task-pulse.
MIGRATIONS = {
    2: ["ALTER TABLE seen ADD COLUMN gone_at REAL"],
    3: ["ALTER TABLE seen ADD COLUMN adopt_at REAL", "ALTER TABLE seen ADD COLUMN status TEXT",
        "ALTER TABLE seen ADD COLUMN version INTEGER NOT NULL DEFAULT 1",
        "ALTER TABLE seen ADD COLUMN shared_version INTEGER",
        # rows of before: their status is in their snapshot, which is JSON either way
        "UPDATE seen SET status = json_extract(snapshot, '$.status') WHERE json_valid(snapshot)"],
    4: ["ALTER TABLE notifications ADD COLUMN paced_until REAL",  # `handoffs` is made by SCHEMA itself
        "ALTER TABLE cards ADD COLUMN due_at REAL"],
    # History, ETA, budgets: the runs, and what the daemon observed of each running task.
    5: [RUNS_TABLE, RUNS_INDEX, "ALTER TABLE seen ADD COLUMN observed TEXT",
        "ALTER TABLE seen ADD COLUMN overdue_at REAL"],
    # Whose file each task is, how much its row keeps, and a run told only in summaries (a flood).
    6: ["ALTER TABLE seen ADD COLUMN owner INTEGER", "ALTER TABLE seen ADD COLUMN size INTEGER",
        "ALTER TABLE seen ADD COLUMN quiet_run INTEGER"],
}


class SQL:
    """Every statement the outbox runs, by name."""

    SCHEMA = """
    CREATE TABLE IF NOT EXISTS meta (
        name  TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    CREATE TABLE IF NOT EXISTS seen (
        task_id     TEXT PRIMARY KEY,
        snapshot    TEXT NOT NULL,      -- the task as last announced: its file's JSON text
        run         INTEGER NOT NULL,   -- +1 each time the task starts again after ending
        file_sig    TEXT,               -- inode:size:mtime_ns of the file last read (a rescan skips it if same)
        digest      TEXT,               -- sha1 of the content last diffed (an event for the same bytes is a no-op)
        stalled_for TEXT,               -- updatedAt of the episode announced as stalled
        progress_at REAL,               -- unix time of the last progress push
        held        TEXT,               -- a progress notification held back by the throttle (JSON)
        stall_at    REAL,               -- unix time the task becomes stalled if not updated (NULL: never)
        ended_at    REAL,               -- unix time a done/error task ended (finishedAt, else updatedAt)
        gone_at     REAL,               -- unix time its file was removed (kept: a file put back is not news)
        adopt_at    REAL,               -- first start: the file's text as read at this unix time, not parsed
                                        -- yet; taken as announced then (see `Outbox.store_unread`)
        status      TEXT,               -- the snapshot's status (NULL while adopt_at is set): `status` counts it
        version     INTEGER NOT NULL DEFAULT 1,  -- +1 at every write of the row
        shared_version INTEGER,         -- the version a shared state db has (see daemon/forwarder.py)
        observed    TEXT,               -- what the daemon saw of this run so far (JSON, task_pulse/history)
        overdue_at  REAL,               -- unix time the running step or the task becomes overdue (NULL: never)
        owner       INTEGER,            -- uid of the task file's owner, as last read
        size        INTEGER,            -- bytes of `snapshot` (a co-user's tombstones are kept within a budget)
        quiet_run   INTEGER             -- a run whose news was told in flood summaries only (see daemon/flood.py)
    );
    CREATE INDEX IF NOT EXISTS seen_ended ON seen (ended_at) WHERE ended_at IS NOT NULL;
    CREATE TABLE IF NOT EXISTS notifications (
        seq          INTEGER PRIMARY KEY AUTOINCREMENT,
        key          TEXT NOT NULL UNIQUE,
        task_id      TEXT NOT NULL,
        task_name    TEXT NOT NULL,
        kind         TEXT NOT NULL,
        created_at   TEXT NOT NULL,
        text         TEXT NOT NULL,
        data         TEXT NOT NULL,
        delivered_at TEXT,
        delivered_by TEXT,
        attempts     INTEGER NOT NULL DEFAULT 0,
        last_error   TEXT,
        claimed_by   TEXT,
        claim_until  REAL,              -- unix time the claim lapses (a dead deliverer's rows come back)
        retry_at     REAL,              -- a sink's next attempt after a failure (drain ignores it)
        paced_until  REAL               -- held back by the chat's pace until then (no attempt counted)
    );
    CREATE INDEX IF NOT EXISTS notifications_pending ON notifications (seq) WHERE delivered_at IS NULL;
    CREATE INDEX IF NOT EXISTS notifications_task_pending ON notifications (task_id, seq) WHERE delivered_at IS NULL;
    CREATE INDEX IF NOT EXISTS notifications_delivered ON notifications (delivered_at)
        WHERE delivered_at IS NOT NULL;
    CREATE TABLE IF NOT EXISTS cards (  -- the live card of each task: written by deliverers only
        task_id     TEXT PRIMARY KEY,
        sink        TEXT NOT NULL,      -- which sink (channel) holds it: another one starts a new card
        message_id  TEXT NOT NULL,      -- the chat's id of the card message, for edits
        started_key TEXT,               -- the `started` notification it was sent for: a new run gets a new card
        text        TEXT NOT NULL,      -- what the card shows now
        updated_at  TEXT NOT NULL,
        due_at      REAL                -- an edit owed then: the pace held back one that carried no row
    );
    -- A send written to the OpenClaw gateway whose outcome is not recorded yet (written by deliverers only).
    -- Stored before the request goes out, so that whoever delivers the task next, after a lost reply or a
    -- restart, sends exactly this again with the same idempotency key: the gateway answers it from memory
    -- instead of sending twice.
    CREATE TABLE IF NOT EXISTS handoffs (
        task_id     TEXT PRIMARY KEY,
        sink        TEXT NOT NULL,      -- which sink wrote it (only the same chat can be asked again)
        key         TEXT NOT NULL,      -- its idempotency key
        seqs        TEXT NOT NULL,      -- JSON list of the notifications it carries
        text        TEXT NOT NULL,
        card        INTEGER NOT NULL,   -- 1: it is the task's card
        started_key TEXT,               -- the card's run (see cards.started_key)
        boot_id     TEXT,               -- the gateway's bootId: its memory of keys ends with that boot
        written_at  REAL NOT NULL       -- unix time it was first written
    );
    """ + RUNS_TABLE + ";\n" + RUNS_INDEX + ";\n"
    # Indexes made once a migration's columns are there (in a new db, or a migrated one). `seen` rows
    # hold each task's whole text: what a start reads of every task (signatures, timers, counts) is
    # in these small indexes, not in the table's 100 MB at 100,000 tasks. Each holds every column its
    # queries name, those of its own WHERE too: only then does SQLite read the index alone.
    LATE_INDEXES = [
        "CREATE INDEX IF NOT EXISTS seen_unadopted ON seen (task_id, adopt_at) WHERE adopt_at IS NOT NULL",
        "CREATE INDEX IF NOT EXISTS seen_sigs ON seen (task_id, file_sig, gone_at) WHERE gone_at IS NULL",
        "CREATE INDEX IF NOT EXISTS seen_stall ON seen (stall_at, task_id) WHERE stall_at IS NOT NULL",
        "CREATE INDEX IF NOT EXISTS seen_status ON seen (status, ended_at, task_id, gone_at) WHERE gone_at IS NULL",
        "CREATE INDEX IF NOT EXISTS seen_held ON seen (task_id, progress_at) WHERE held IS NOT NULL",
        "CREATE INDEX IF NOT EXISTS seen_stalled ON seen (task_id, stalled_for, gone_at) "
        "WHERE stalled_for IS NOT NULL AND gone_at IS NULL",
        "CREATE INDEX IF NOT EXISTS seen_overdue ON seen (overdue_at, task_id) WHERE overdue_at IS NOT NULL",
        "CREATE INDEX IF NOT EXISTS seen_gone_owner ON seen (owner, gone_at, size) WHERE gone_at IS NOT NULL",
        "CREATE INDEX IF NOT EXISTS notifications_held ON notifications (claimed_by) "
        "WHERE delivered_at IS NULL AND claimed_by LIKE 'flood:%'",
    ]
    GET_META = "SELECT value FROM meta WHERE name = ?"
    SET_META = "INSERT INTO meta (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value"

    GET_SEEN = """
    SELECT task_id, snapshot, run, file_sig, stalled_for, progress_at, held, stall_at, digest, gone_at, adopt_at,
        observed, overdue_at, owner, quiet_run
    FROM seen WHERE task_id = ?
    """
    STALL_TIMERS = "SELECT task_id, stall_at FROM seen WHERE stall_at IS NOT NULL"
    OVERDUE_TIMERS = "SELECT task_id, overdue_at FROM seen WHERE overdue_at IS NOT NULL"
    HELD_PROGRESS = "SELECT task_id, progress_at FROM seen WHERE held IS NOT NULL"
    SEEN_SIGS = "SELECT task_id, file_sig FROM seen WHERE gone_at IS NULL"
    PUT_SEEN = """
    INSERT INTO seen (task_id, snapshot, run, file_sig, stalled_for, progress_at, held, stall_at, ended_at, digest,
        status, observed, overdue_at, owner, size, quiet_run)
    VALUES (:task_id, :snapshot, :run, :file_sig, :stalled_for, :progress_at, :held, :stall_at, :ended_at, :digest,
        :status, :observed, :overdue_at, :owner, length(CAST(:snapshot AS BLOB)), :quiet_run)
    ON CONFLICT (task_id) DO UPDATE SET
        snapshot = excluded.snapshot, run = excluded.run, file_sig = excluded.file_sig,
        stalled_for = excluded.stalled_for, progress_at = excluded.progress_at, held = excluded.held,
        stall_at = excluded.stall_at, ended_at = excluded.ended_at, digest = excluded.digest, gone_at = NULL,
        adopt_at = NULL, status = excluded.status, owner = coalesce(excluded.owner, seen.owner),
        size = excluded.size, quiet_run = excluded.quiet_run, version = seen.version + 1, observed = excluded.observed,
        overdue_at = excluded.overdue_at
    """
    # A first start's file, stored as read (see `Outbox.store_unread`); replaces what a start cut short left.
    PUT_UNREAD = """
    INSERT INTO seen (task_id, snapshot, run, file_sig, digest, adopt_at, owner, size)
    VALUES (?, ?, 0, ?, ?, ?, ?, length(CAST(?2 AS BLOB)))
    ON CONFLICT (task_id) DO UPDATE SET
        snapshot = excluded.snapshot, run = 0, file_sig = excluded.file_sig, stalled_for = NULL, progress_at = NULL,
        held = NULL, stall_at = NULL, ended_at = NULL, digest = excluded.digest, gone_at = NULL,
        adopt_at = excluded.adopt_at, status = NULL, owner = excluded.owner, size = excluded.size, quiet_run = NULL,
        version = seen.version + 1, observed = NULL, overdue_at = NULL
    """
    UNADOPTED = "SELECT task_id FROM seen WHERE adopt_at IS NOT NULL ORDER BY task_id LIMIT ?"
    # The forwarder's (daemon/forwarder.py): rows written since a shared state db last got them. Its index
    # is made by the forwarder only: a daemon without a shared db pays nothing for it.
    UNSHARED_INDEX = """
    CREATE INDEX IF NOT EXISTS seen_unshared ON seen (task_id) WHERE version > coalesce(shared_version, 0)
    """
    UNSHARED = """
    SELECT task_id, snapshot, status, stalled_for, stall_at, ended_at, gone_at, version FROM seen
    WHERE version > coalesce(shared_version, 0) LIMIT ?
    """
    SHARED_ROWS = """
    SELECT task_id, snapshot, status, stalled_for, stall_at, ended_at, gone_at, version FROM seen
    WHERE task_id IN (SELECT value FROM json_each(?))
    """
    MARK_SHARED = "UPDATE seen SET shared_version = :version WHERE task_id = :task_id AND version >= :version"
    # The forwarder is this dir's only deliverer (a local drain refuses while it forwards): no claims, but for a
    # flood window's (daemon/flood.py): what it holds is told by its summary, which is forwarded in turn.
    UNFORWARDED = """
    SELECT seq, key, task_id, task_name, kind, created_at, text, data, attempts
    FROM notifications WHERE delivered_at IS NULL AND (claimed_by IS NULL OR claimed_by NOT LIKE 'flood:%')
    ORDER BY seq LIMIT ?
    """
    MARK_FORWARDED = """
    UPDATE notifications SET delivered_at = :at, delivered_by = 'shared', claimed_by = NULL, claim_until = NULL
    WHERE seq = :seq AND delivered_at IS NULL
    """
    # What adopting a stored text changes in its row: the text as the daemon keeps it (snapshot.py), the stall
    # state (the signature and digest of the file it was read from stay).
    ADOPTED = """
    UPDATE seen SET snapshot = :snapshot, size = length(CAST(:snapshot AS BLOB)), stalled_for = :stalled_for,
        stall_at = :stall_at, ended_at = :ended_at, adopt_at = NULL, status = :status, version = version + 1,
        observed = :observed, overdue_at = :overdue_at
    WHERE task_id = :task_id
    """
    DROP_SEEN = "DELETE FROM seen WHERE task_id = ?"
    # The file is gone: no timers, nothing held; the snapshot, run and throttle stay for its return.
    MARK_GONE = """
    UPDATE seen SET gone_at = :now, stall_at = NULL, held = NULL, file_sig = NULL, digest = NULL, overdue_at = NULL,
        version = version + 1
    WHERE task_id = :task_id AND gone_at IS NULL
    """
    PURGE_GONE = "DELETE FROM seen WHERE gone_at < ?"
    # A co-user's tombstones beyond a budget of bytes: the oldest go first (writing and deleting files must not
    # fill the user's disk with what they said).
    TRIM_GONE = """
    DELETE FROM seen WHERE task_id IN (
        SELECT task_id FROM (
            SELECT task_id, sum(coalesce(size, length(CAST(snapshot AS BLOB)))) OVER (ORDER BY gone_at DESC, task_id)
                AS kept
            FROM seen WHERE owner = :owner AND gone_at IS NOT NULL)
        WHERE kept > :budget)
    """
    ENDED_BEFORE = "SELECT task_id FROM seen WHERE ended_at < ? AND gone_at IS NULL ORDER BY ended_at"
    COUNT_SEEN = "SELECT count(*) FROM seen WHERE gone_at IS NULL"
    COUNT_STALLED = "SELECT count(*) FROM seen WHERE stalled_for IS NOT NULL AND gone_at IS NULL"
    # `task-pulse status` in a big dir (see `Outbox.overview`): counts and the tasks most worth showing,
    # from the indexes alone. Stalled by the same rule as everywhere: past its deadline, or announced.
    HAS_UNADOPTED = "SELECT 1 FROM seen WHERE adopt_at IS NOT NULL LIMIT 1"
    COUNT_BY_STATUS = "SELECT status, count(*) FROM seen WHERE gone_at IS NULL GROUP BY status"
    COUNT_OVERDUE = "SELECT count(*) FROM seen WHERE stall_at < :now"
    STALLED_IDS = """
    SELECT task_id FROM seen WHERE stalled_for IS NOT NULL AND gone_at IS NULL
    UNION SELECT task_id FROM seen WHERE stall_at < :now
    LIMIT :limit
    """
    LATEST_UPDATED = "SELECT task_id FROM seen WHERE stall_at IS NOT NULL ORDER BY stall_at DESC LIMIT :limit"
    LATEST_ENDED = """
    SELECT task_id FROM seen WHERE status = :status AND gone_at IS NULL ORDER BY ended_at DESC LIMIT :limit
    """

    INSERT_NOTIFICATION = """
    INSERT OR IGNORE INTO notifications (key, task_id, task_name, kind, created_at, text, data)
    VALUES (:key, :task_id, :task_name, :kind, :created_at, :text, :data)
    """
    # A notification past a flood limit: held (claimed by the window) until its summary tells it (daemon/flood.py).
    INSERT_HELD = """
    INSERT OR IGNORE INTO notifications (key, task_id, task_name, kind, created_at, text, data, claimed_by, claim_until)
    VALUES (:key, :task_id, :task_name, :kind, :created_at, :text, :data, :held_by, :held_until)
    """
    HELD = """
    SELECT seq, key, task_id, task_name, kind, created_at, text, data, attempts
    FROM notifications WHERE claimed_by = :held_by AND delivered_at IS NULL ORDER BY seq
    """
    HELD_WINDOWS = """
    SELECT DISTINCT claimed_by FROM notifications WHERE delivered_at IS NULL AND claimed_by LIKE 'flood:%'
    """
    SETTLE_HELD = """
    UPDATE notifications SET delivered_at = :at, delivered_by = :by, claimed_by = NULL, claim_until = NULL
    WHERE claimed_by = :held_by AND delivered_at IS NULL
    """
    # A notification stored as already delivered: what a summary told instead (see `record_summary`).
    INSERT_SETTLED = """
    INSERT OR IGNORE INTO notifications (key, task_id, task_name, kind, created_at, text, data, delivered_at,
        delivered_by)
    VALUES (:key, :task_id, :task_name, :kind, :created_at, :text, :data, :created_at, :by)
    """
    HAS_KEY = "SELECT 1 FROM notifications WHERE key = ?"
    COUNT_NOTIFICATIONS = "SELECT count(*) FROM notifications"
    COUNT_PENDING = "SELECT count(*) FROM notifications WHERE delivered_at IS NULL"
    CLAIMABLE = """
    SELECT seq, key, task_id, task_name, kind, created_at, text, data, attempts
    FROM notifications
    WHERE delivered_at IS NULL AND (claim_until IS NULL OR claim_until < :now)
    ORDER BY seq LIMIT :limit
    """
    CLAIM = "UPDATE notifications SET claimed_by = :owner, claim_until = :until WHERE seq = :seq"
    MARK_DELIVERED = """
    UPDATE notifications SET delivered_at = :at, delivered_by = :by, claimed_by = NULL, claim_until = NULL
    WHERE seq = :seq AND claimed_by = :owner AND delivered_at IS NULL
    """
    RELEASE = "UPDATE notifications SET claimed_by = NULL, claim_until = NULL WHERE seq = :seq AND claimed_by = :owner"
    RETRY_LATER = """
    UPDATE notifications SET claimed_by = NULL, claim_until = NULL, attempts = attempts + :count,
        last_error = :error, retry_at = :retry_at, paced_until = NULL
    WHERE seq = :seq AND claimed_by = :owner
    """
    # Held back by the chat's pace: free again at :until, no attempt counted.
    DEFER = """
    UPDATE notifications SET claimed_by = NULL, claim_until = NULL, retry_at = NULL, paced_until = :until
    WHERE seq = :seq AND claimed_by = :owner
    """
    # Given up at once (the chat refused it for good): left for `task-pulse drain`.
    GIVE_UP = """
    UPDATE notifications SET claimed_by = NULL, claim_until = NULL, attempts = max(attempts + 1, :max_attempts),
        last_error = :error, retry_at = NULL, paced_until = NULL
    WHERE seq = :seq AND claimed_by = :owner
    """
    # A sink takes the oldest row it may try now, and never one whose task has an older row still
    # undelivered (failed and waiting to retry, or held by a drain): per-task order is kept. Rows that
    # used up their attempts are left to `task-pulse drain` and no longer hold their task back.
    # Rows held back by the chat's pace (`paced_until`) wait too, and hold back the rows after them, except
    # for a ping (see records.PINGS): the end of a task or a stall alarm never waits behind a card edit.
    SINK_CLAIMABLE = f"""
    SELECT seq, key, task_id, task_name, kind, created_at, text, data, attempts
    FROM notifications AS n
    WHERE n.delivered_at IS NULL AND n.attempts < :max_attempts
      AND (n.claim_until IS NULL OR n.claim_until < :now) AND (n.retry_at IS NULL OR n.retry_at <= :now)
      AND (n.paced_until IS NULL OR n.paced_until <= :now)
      AND NOT EXISTS (
          SELECT 1 FROM notifications AS p
          WHERE p.task_id = n.task_id AND p.seq < n.seq AND p.delivered_at IS NULL AND p.attempts < :max_attempts
            AND NOT (n.kind IN ({PINGS_SQL}) AND p.paced_until > :now AND p.retry_at IS NULL
                     AND (p.claim_until IS NULL OR p.claim_until < :now)))
    ORDER BY n.seq LIMIT 1
    """
    # When the next row a sink may want becomes free: a retry coming due or a claim lapsing.
    SINK_NEXT_FREE = """
    SELECT min(at) FROM (
        SELECT max(coalesce(retry_at, 0), coalesce(claim_until, 0), coalesce(paced_until, 0)) AS at FROM notifications
        WHERE delivered_at IS NULL AND attempts < :max_attempts
          AND max(coalesce(retry_at, 0), coalesce(claim_until, 0), coalesce(paced_until, 0)) > :now
        UNION ALL SELECT due_at FROM cards WHERE due_at > :now)
    """
    PURGE_DELIVERED = "DELETE FROM notifications WHERE delivered_at IS NOT NULL AND delivered_at < :before"
    # Everything a sink may deliver now for one task, oldest first: one call can carry it all.
    TASK_BATCH = """
    SELECT seq, key, task_id, task_name, kind, created_at, text, data, attempts
    FROM notifications
    WHERE task_id = :task_id AND delivered_at IS NULL AND attempts < :max_attempts
      AND (claim_until IS NULL OR claim_until < :now)
    ORDER BY seq LIMIT :limit
    """

    GET_CARD = "SELECT message_id, text, started_key FROM cards WHERE task_id = :task_id AND sink = :sink"
    PUT_CARD = """
    INSERT INTO cards (task_id, sink, message_id, started_key, text, updated_at)
    VALUES (:task_id, :sink, :message_id, :started_key, :text, :at)
    ON CONFLICT (task_id) DO UPDATE SET sink = excluded.sink, message_id = excluded.message_id,
        started_key = excluded.started_key, text = excluded.text, updated_at = excluded.updated_at, due_at = NULL
    """
    OWE_EDIT = "UPDATE cards SET due_at = :at WHERE task_id = :task_id"
    # A card whose owed edit is due, of a task with nothing waiting (what waits would edit it anyway).
    OWED_CARD = """
    SELECT task_id FROM cards AS c WHERE due_at <= :now
      AND NOT EXISTS (SELECT 1 FROM notifications AS n WHERE n.task_id = c.task_id AND n.delivered_at IS NULL)
    ORDER BY due_at LIMIT 1
    """
    DROP_CARD = "DELETE FROM cards WHERE task_id = :task_id"
    RENEW = "UPDATE notifications SET claim_until = :until WHERE seq = :seq AND claimed_by = :owner"
    # A row no daemon wrote as it is (see records.queued): never delivered, never claimed again, kept with why.
    SET_ASIDE = """
    UPDATE notifications SET delivered_at = :at, delivered_by = 'malformed', last_error = :error, claimed_by = NULL,
        claim_until = NULL
    WHERE seq = :seq AND delivered_at IS NULL
    """
    # Rows a sink gave up on come back to it once it works again (nobody may be running drain).
    REARM = """
    UPDATE notifications SET attempts = 0, retry_at = NULL
    WHERE delivered_at IS NULL AND attempts >= :max_attempts AND claimed_by IS NULL
    """
    RELEASE_OWNED = """
    UPDATE notifications SET claimed_by = NULL, claim_until = NULL
    WHERE delivered_at IS NULL AND substr(claimed_by, 1, length(:prefix)) = :prefix
    """
    PURGE_CARDS = "DELETE FROM cards WHERE task_id NOT IN (SELECT task_id FROM seen)"

    GET_HANDOFF = """
    SELECT key, sink, seqs, text, card, started_key, boot_id, written_at FROM handoffs WHERE task_id = :task_id
    """
    PUT_HANDOFF = """
    INSERT INTO handoffs (task_id, sink, key, seqs, text, card, started_key, boot_id, written_at)
    VALUES (:task_id, :sink, :key, :seqs, :text, :card, :started_key, :boot_id, :written_at)
    ON CONFLICT (task_id) DO UPDATE SET sink = excluded.sink, key = excluded.key, seqs = excluded.seqs,
        text = excluded.text, card = excluded.card, started_key = excluded.started_key, boot_id = excluded.boot_id,
        written_at = excluded.written_at
    """
    DROP_HANDOFF = "DELETE FROM handoffs WHERE task_id = :task_id AND key = :key"
    PURGE_HANDOFFS = """
    DELETE FROM handoffs WHERE task_id NOT IN (SELECT task_id FROM notifications WHERE delivered_at IS NULL)
    """

    # -- the history of finished runs (task_pulse/history) --------------------------------------------
    PUT_RUN = """
    INSERT OR IGNORE INTO runs (key, task_id, name, outcome, at, started_at, finished_at, steps)
    VALUES (:key, :task_id, :name, :outcome, :at, :started_at, :finished_at, :steps)
    """
    # The runs of a name past the newest :keep go (the bound per task name).
    TRIM_RUNS = """
    DELETE FROM runs WHERE rowid IN (
        SELECT rowid FROM runs WHERE name = :name ORDER BY at DESC, rowid DESC LIMIT -1 OFFSET :keep)
    """
    PURGE_RUNS = "DELETE FROM runs WHERE at < :before"
    RUN_NAMES = "SELECT DISTINCT name FROM runs"
    _RUN_COLUMNS = "key, task_id, name, outcome, at, started_at, finished_at, steps"
    RUNS_OF = f"SELECT {_RUN_COLUMNS} FROM runs WHERE name = :name ORDER BY at DESC, rowid DESC LIMIT :limit"
    DONE_RUNS_OF = f"""
    SELECT {_RUN_COLUMNS} FROM runs WHERE name = :name AND outcome = 'done' ORDER BY at DESC, rowid DESC LIMIT :limit
    """
    # The latest :limit done runs of each of several names (a JSON list), for `status`.
    DONE_RUNS_OF_NAMES = f"""
    SELECT {_RUN_COLUMNS} FROM (
        SELECT *, row_number() OVER (PARTITION BY name ORDER BY at DESC, rowid DESC) AS nth FROM runs
        WHERE outcome = 'done' AND name IN (SELECT value FROM json_each(:names)))
    WHERE nth <= :limit
    """
    RUN_SUMMARY = """
    SELECT name, count(*), sum(outcome = 'done'), max(at) FROM runs GROUP BY name ORDER BY max(at) DESC
    """
    UNSHARED_RUNS_INDEX = "CREATE INDEX IF NOT EXISTS runs_unshared ON runs (key) WHERE shared = 0"
    UNSHARED_RUNS = f"SELECT {_RUN_COLUMNS} FROM runs WHERE shared = 0 LIMIT ?"
    MARK_RUN_SHARED = "UPDATE runs SET shared = 1 WHERE key = ?"

    # -- the board's detail of one task (task_pulse/board): read-only ---------------------------------------
    # A notification's key starts with its task id and ":" (daemon/differ.py): the UNIQUE index on `key`
    # finds a task's rows by that prefix (";" is the character after ":"), with no index of their own.
    TASK_NOTIFICATIONS = """
    SELECT seq, kind, created_at, text, delivered_at, delivered_by, attempts, last_error FROM notifications
    WHERE key >= :low AND key < :high AND task_id = :task_id ORDER BY seq DESC LIMIT :limit
    """
    TASK_CARDS = "SELECT sink, message_id, updated_at FROM cards WHERE task_id = :task_id"
