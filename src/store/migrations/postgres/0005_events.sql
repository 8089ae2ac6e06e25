-- 0005_events: the event log (docs/events.md): what happened (task state changes, agents,
-- breakers, workflows, pools, refusals, configuration), one row per event in the order it
-- became durable. The blob is a drover.v1.Event; the plain columns are what reads filter on.
--
-- `seq` is given by the server that writes (one owns the store's work at a time) and goes
-- on from max(seq) after a restart. Reads page by seq; a task's or a pool's events come
-- through their own indexes. Time has no index (one b-tree less per event): seqs grow with
-- time, so a read `since` and the retention sweep find their first seq by binary search
-- over seq, and the sweep deletes a range of seqs.
CREATE TABLE events (
  seq         bigint PRIMARY KEY,
  unix_ms     bigint NOT NULL,
  type        text COLLATE "C" NOT NULL,
  tenant      text COLLATE "C" NOT NULL,
  task_id     bigint NOT NULL,
  workflow_id bigint NOT NULL,
  pool        text COLLATE "C" NOT NULL,
  blob        bytea NOT NULL
);

CREATE INDEX events_by_task ON events (task_id, seq) WHERE task_id <> 0;
CREATE INDEX events_by_workflow ON events (workflow_id, seq) WHERE workflow_id <> 0;
CREATE INDEX events_by_pool ON events (pool, seq) WHERE pool <> '';
