-- 0003_load_history: per pool and minute, what the pool saw (docs/history.md), kept for
-- forecasting its arrivals.
--
-- WITHOUT ROWID: the table is its primary key's b-tree, so a pool's history is one
-- contiguous range in minute order (ReadLoadHistory is a range scan, no second lookup) and
-- the key is not stored twice. Rows are small and fixed-size, which suits it.
CREATE TABLE load_history (
  pool            TEXT    NOT NULL,
  minute          INTEGER NOT NULL,  -- Unix time / 60 of the minute's start
  arrivals        INTEGER NOT NULL,
  dispatches      INTEGER NOT NULL,
  completions     INTEGER NOT NULL,
  service_mean_s  REAL    NOT NULL,  -- of attempts that ended in the minute
  service_p95_s   REAL    NOT NULL,
  queue_depth     INTEGER NOT NULL,  -- runnable ready tasks at the minute's end
  agents_starting INTEGER NOT NULL,
  agents_idle     INTEGER NOT NULL,
  agents_busy     INTEGER NOT NULL,
  agents_draining INTEGER NOT NULL,
  PRIMARY KEY (pool, minute)
) STRICT, WITHOUT ROWID;

-- The retention sweep deletes by age across every pool; without this index each sweep
-- would scan the whole table. It costs one more b-tree write per row, and rows arrive at
-- one per pool per minute (imports aside).
CREATE INDEX load_history_by_minute ON load_history (minute);
