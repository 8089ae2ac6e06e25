-- 0002_workflows: one row per workflow (a group of tasks with edges between them).
--
-- Like tasks, the row is a serialized drover.v1.Workflow in `blob` with a few columns copied
-- out for people reading the file. The tasks of a workflow carry its id in their own
-- records; the workflow's blob holds its progress as of its last change, written in the
-- same transaction as the task change that caused it.
CREATE TABLE workflows (
  id              INTEGER PRIMARY KEY,
  tenant          TEXT    NOT NULL,
  state           INTEGER NOT NULL,  -- drover.v1.WorkflowState
  updated_unix_ms INTEGER NOT NULL,
  blob            BLOB    NOT NULL
) STRICT;
