"""The SQLite schema, versioned. ``MIGRATIONS[i]`` takes the database from version i to i+1;
each runs in the same transaction as the version bump, so a crash leaves the old version."""

from __future__ import annotations

SCHEMA_VERSION = 8

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE instances(
        id TEXT PRIMARY KEY, host TEXT NOT NULL, boot_id TEXT NOT NULL, pid_ns TEXT NOT NULL,
        pid INTEGER NOT NULL, start_ticks INTEGER NOT NULL, session_id TEXT NOT NULL,
        cwd TEXT NOT NULL, started_wall_ms INTEGER NOT NULL, started_ns INTEGER NOT NULL,
        heartbeat_ns INTEGER NOT NULL, heartbeat_wall_ms INTEGER NOT NULL,
        lease_ns INTEGER NOT NULL, priority INTEGER NOT NULL, reserved INTEGER NOT NULL,
        pending INTEGER NOT NULL DEFAULT 0, avg_latency_ms REAL, active_orch INTEGER NOT NULL
        DEFAULT 0);
    CREATE TABLE active_models(
        instance_id TEXT NOT NULL, provider TEXT NOT NULL, model TEXT NOT NULL,
        count INTEGER NOT NULL, since_wall_ms INTEGER NOT NULL,
        PRIMARY KEY(instance_id, provider, model));
    CREATE TABLE limits(
        key TEXT NOT NULL, instance_id TEXT NOT NULL, a INTEGER NOT NULL, b INTEGER NOT NULL,
        PRIMARY KEY(key, instance_id));
    CREATE INDEX limits_instance ON limits(instance_id);
    CREATE TABLE buckets(
        key TEXT PRIMARY KEY, per_minute INTEGER NOT NULL, burst INTEGER NOT NULL,
        tat INTEGER NOT NULL, win INTEGER NOT NULL DEFAULT 0, cur INTEGER NOT NULL DEFAULT 0,
        prev INTEGER NOT NULL DEFAULT 0);
    CREATE TABLE groups(key TEXT PRIMARY KEY, lim INTEGER NOT NULL);
    CREATE TABLE permits(
        id INTEGER PRIMARY KEY, instance_id TEXT NOT NULL, provider TEXT NOT NULL,
        model TEXT, tokens INTEGER NOT NULL, granted_ns INTEGER NOT NULL);
    CREATE TABLE waiters(
        ticket INTEGER PRIMARY KEY AUTOINCREMENT, instance_id TEXT NOT NULL,
        rates TEXT NOT NULL, slots TEXT NOT NULL, seen_ns INTEGER NOT NULL);
    CREATE TABLE usage(
        key TEXT NOT NULL, instance_id TEXT NOT NULL, win INTEGER NOT NULL,
        cur INTEGER NOT NULL, prev INTEGER NOT NULL, PRIMARY KEY(key, instance_id));
    CREATE TABLE events(
        id INTEGER PRIMARY KEY AUTOINCREMENT, wall_ms INTEGER NOT NULL, kind TEXT NOT NULL,
        instance_id TEXT, data TEXT NOT NULL);
    """,
    # v2: every page a permit reads is re-read after another process commits, so the fast
    # path should touch few: a covering index answers "does anyone reserve slots?" without
    # the wide instance rows, and buckets and groups become clustered on their key
    # (WITHOUT ROWID: one page per lookup instead of index page + table page).
    """
    CREATE INDEX instances_policy ON instances(id, reserved, priority);
    CREATE TABLE buckets_v2(
        key TEXT PRIMARY KEY, per_minute INTEGER NOT NULL, burst INTEGER NOT NULL,
        tat INTEGER NOT NULL, win INTEGER NOT NULL DEFAULT 0, cur INTEGER NOT NULL DEFAULT 0,
        prev INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID;
    INSERT INTO buckets_v2 SELECT key, per_minute, burst, tat, win, cur, prev FROM buckets;
    DROP TABLE buckets;
    ALTER TABLE buckets_v2 RENAME TO buckets;
    CREATE TABLE groups_v2(key TEXT PRIMARY KEY, lim INTEGER NOT NULL) WITHOUT ROWID;
    INSERT INTO groups_v2 SELECT key, lim FROM groups;
    DROP TABLE groups;
    ALTER TABLE groups_v2 RENAME TO groups;
    """,
    # v3: what adaptive rate control learned per bucket, shared by every instance.
    """
    ALTER TABLE buckets ADD COLUMN lrate REAL;
    ALTER TABLE buckets ADD COLUMN decreased_at INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE buckets ADD COLUMN last_429 INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE buckets ADD COLUMN last_increase INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE buckets ADD COLUMN cooldown_until INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE buckets ADD COLUMN reported_limit INTEGER;
    """,
    # v4: whether any outcome was ever reported for the bucket (ends the slow start).
    """
    ALTER TABLE buckets ADD COLUMN probed INTEGER NOT NULL DEFAULT 0;
    """,
    # v5: workflow ownership with fenced state, and TTL locks with fencing tokens. Rows of
    # released workflows and locks stay (owner / holder NULL) so their epochs and tokens keep
    # growing and are never handed out twice.
    """
    CREATE TABLE workflows(
        id TEXT PRIMARY KEY, owner TEXT, pid INTEGER, host TEXT, boot_id TEXT, pid_ns TEXT,
        start_ticks INTEGER, epoch INTEGER NOT NULL, claimed_wall_ms INTEGER NOT NULL,
        updated_wall_ms INTEGER NOT NULL) WITHOUT ROWID;
    CREATE TABLE workflow_state(
        workflow_id TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
        epoch INTEGER NOT NULL, updated_wall_ms INTEGER NOT NULL,
        PRIMARY KEY(workflow_id, key)) WITHOUT ROWID;
    CREATE TABLE locks(
        resource TEXT PRIMARY KEY, lock_id TEXT, holder TEXT, token INTEGER NOT NULL,
        acquired_ns INTEGER, expires_ns INTEGER, acquired_wall_ms INTEGER,
        expires_wall_ms INTEGER) WITHOUT ROWID;
    CREATE INDEX locks_holder ON locks(holder);
    CREATE TABLE lock_waiters(
        ticket INTEGER PRIMARY KEY AUTOINCREMENT, resource TEXT NOT NULL,
        instance_id TEXT NOT NULL, seen_ns INTEGER NOT NULL);
    CREATE INDEX lock_waiters_resource ON lock_waiters(resource, ticket);
    """,
    # v6: a wait is known by the id its caller chose (``wait``, sent with every attempt), so
    # an attempt sent twice queues once; ``ticket`` stays the place in the queue. A lock
    # remembers the wait it was granted to, so that wait asking again gets the same grant, and
    # the lock ids whose release freed a lock (the last thousand), so that a release sent again
    # gets the same answer, even once a waiter holds the lock.
    """
    ALTER TABLE waiters ADD COLUMN wait INTEGER;
    CREATE UNIQUE INDEX waiters_wait ON waiters(wait);
    ALTER TABLE lock_waiters ADD COLUMN wait INTEGER;
    CREATE UNIQUE INDEX lock_waiters_wait ON lock_waiters(wait);
    ALTER TABLE locks ADD COLUMN wait INTEGER;
    CREATE TABLE released_locks(
        seq INTEGER PRIMARY KEY AUTOINCREMENT, lock_id TEXT NOT NULL UNIQUE);
    """,
    # v7: money spent per budget key (``core.budgets``), in nano-dollars, until ``expires_ns``
    # on the store clock (then it reads as 0 and the next add removes it). Kept across a
    # reboot: it is money, not a lease.
    """
    CREATE TABLE spend(
        key TEXT PRIMARY KEY, total INTEGER NOT NULL, expires_ns INTEGER NOT NULL)
        WITHOUT ROWID;
    CREATE INDEX spend_expires ON spend(expires_ns);
    """,
    # v8: the shared work queue (``core.workqueue``, ``stores.sqlite.workqueue``): a task per
    # row, ``seq`` its place in enqueue order (the newest row is never deleted, so no seq is
    # given twice without AUTOINCREMENT's extra page), ``finished`` the wall ms it was
    # settled; one
    # partial index per question a step asks, and no more (each index a step changes is one
    # more page written at its commit); per instance the counts and stealing stats in
    # ``task_owners`` (a row per instance: read whole).
    """
    CREATE TABLE tasks(
        seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, owner TEXT NOT NULL,
        tool TEXT NOT NULL, priority INTEGER NOT NULL, payload TEXT NOT NULL,
        enqueued_wall_ms INTEGER NOT NULL, enqueued_ns INTEGER NOT NULL,
        attempts INTEGER NOT NULL, max_attempts INTEGER NOT NULL, state TEXT NOT NULL,
        fence INTEGER NOT NULL, lease_ns INTEGER, result TEXT, error TEXT, finished INTEGER);
    CREATE INDEX tasks_queued ON tasks(owner, priority DESC, seq) WHERE state='queued';
    CREATE INDEX tasks_leases ON tasks(lease_ns) WHERE state='running';
    CREATE INDEX tasks_finished ON tasks(state, finished, seq) WHERE finished IS NOT NULL;
    CREATE TABLE task_owners(
        id TEXT PRIMARY KEY, queued INTEGER NOT NULL DEFAULT 0,
        running INTEGER NOT NULL DEFAULT 0, done INTEGER NOT NULL DEFAULT 0,
        failed INTEGER NOT NULL DEFAULT 0, stolen_from_ns INTEGER NOT NULL DEFAULT 0,
        attempts INTEGER NOT NULL DEFAULT 0, steals INTEGER NOT NULL DEFAULT 0,
        misses INTEGER NOT NULL DEFAULT 0, waited_ms REAL NOT NULL DEFAULT 0) WITHOUT ROWID;
    """,
)
