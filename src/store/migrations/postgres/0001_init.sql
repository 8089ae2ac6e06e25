-- 0001_init (PostgreSQL): the first drover schema on PostgreSQL.
--
-- Applied by OpenPostgresStore in one transaction under a transaction-scoped advisory lock
-- (so two servers starting together do not race, and it works behind PgBouncer in
-- transaction mode), which then records the version in drover_schema.
--
-- Text columns that are keys or sorted use COLLATE "C": byte order, as the SQLite driver
-- and the conformance suite expect, whatever the database's locale.

-- The hot table: tasks not finished yet (and DEAD ones, which stay until purged). A task
-- that succeeds, is canceled or expires moves to task_history in the same transaction, so
-- this table stays the size of the live queue and its updates stay HOT (fillfactor leaves
-- room on each page). `rev` is the writing transaction's id: when a task's row exists in
-- both tables (it went back from a finished state), the larger rev is the current one.
-- No secondary index: the engine answers queries from memory and reads rows by id.
CREATE TABLE tasks (
  id              bigint  PRIMARY KEY,
  tenant          text    NOT NULL,
  type            text    NOT NULL,
  state           integer NOT NULL,  -- drover.v1.TaskState
  priority        integer NOT NULL,  -- drover.v1.Priority
  updated_unix_ms bigint  NOT NULL,
  rev             bigint  NOT NULL,
  blob            bytea   NOT NULL
) WITH (fillfactor = 85);

-- Finished tasks, one table per UTC day of their last update: retention drops a whole day
-- (DROP TABLE) instead of deleting rows one by one, which would bloat the table and keep
-- vacuum busy. Days are created ahead by the store; a row outside them (an old import, a
-- clock far off) lands in the default table, which the row-by-row sweep prunes.
CREATE TABLE task_history (
  id              bigint  NOT NULL,
  tenant          text    NOT NULL,
  type            text    NOT NULL,
  state           integer NOT NULL,
  priority        integer NOT NULL,
  updated_unix_ms bigint  NOT NULL,
  rev             bigint  NOT NULL,
  blob            bytea   NOT NULL
) PARTITION BY RANGE (updated_unix_ms);
CREATE TABLE task_history_default PARTITION OF task_history DEFAULT;
-- Unique with the partition key (PostgreSQL requires it in a partitioned unique index): a
-- commit sent again after a lost connection, or a second write in the same millisecond,
-- updates the row instead of adding a copy. Reads by id use it too.
CREATE UNIQUE INDEX task_history_by_id ON task_history (id, updated_unix_ms);

CREATE TABLE workflows (
  id              bigint  PRIMARY KEY,
  tenant          text    NOT NULL,
  state           integer NOT NULL,  -- drover.v1.WorkflowState
  updated_unix_ms bigint  NOT NULL,
  blob            bytea   NOT NULL
);

-- Small key/value facts about the whole store ("epoch", "max_task_id", "pools", ...).
CREATE TABLE meta (
  key   text COLLATE "C" PRIMARY KEY,
  value text NOT NULL
);

-- Per pool and minute, what the pool saw (docs/history.md).
CREATE TABLE load_history (
  pool            text COLLATE "C" NOT NULL,
  minute          bigint  NOT NULL,
  arrivals        bigint  NOT NULL,
  dispatches      bigint  NOT NULL,
  completions     bigint  NOT NULL,
  service_mean_s  double precision NOT NULL,
  service_p95_s   double precision NOT NULL,
  queue_depth     bigint  NOT NULL,
  agents_starting integer NOT NULL,
  agents_idle     integer NOT NULL,
  agents_busy     integer NOT NULL,
  agents_draining integer NOT NULL,
  PRIMARY KEY (pool, minute)
);
CREATE INDEX load_history_by_minute ON load_history (minute);
