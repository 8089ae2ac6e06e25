-- 0001_init: the first drover schema.
--
-- Applied inside one transaction by OpenSqliteStore, which then sets PRAGMA user_version = 1.
-- Plain CREATE (no IF NOT EXISTS) on purpose: a migration must never run twice, and a
-- database that already has these names without the version bookkeeping is not ours.
--
-- STRICT tables make SQLite reject a value of the wrong type instead of storing it anyway.

-- One row per task. `id` is the rowid (INTEGER PRIMARY KEY), so id-ordered scans walk the
-- table b-tree directly. The other columns are copies of fields inside `blob` (a serialized
-- drover.v1.Task) for people and tools reading the file (sqlite3 drover.db). No secondary
-- index: the engine answers every query from memory and reads the store only by id, and
-- each index costs a write on every commit (measured: 290k rows/s without the two indexes
-- once planned, 130k rows/s with them).
CREATE TABLE tasks (
  id              INTEGER PRIMARY KEY,
  tenant          TEXT    NOT NULL,
  type            TEXT    NOT NULL,
  state           INTEGER NOT NULL,  -- drover.v1.TaskState
  priority        INTEGER NOT NULL,  -- drover.v1.Priority
  updated_unix_ms INTEGER NOT NULL,
  blob            BLOB    NOT NULL
) STRICT;

-- Small key/value facts about the whole store ("epoch", "max_task_id", ...).
CREATE TABLE meta (
  key   TEXT PRIMARY KEY,
  value TEXT NOT NULL
) STRICT;
