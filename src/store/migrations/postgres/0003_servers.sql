-- 0003_servers: every drover server on this database (owner or standby) and when it last
-- said so, for `drover cluster`. Informational only: ownership is the leases table. A
-- server refreshes its row every third of its lease TTL and deletes it on a clean stop;
-- rows not refreshed for an hour are deleted by any server's refresh.
CREATE TABLE servers (
  id           text COLLATE "C" PRIMARY KEY,  -- host/pid/start-ms, as in leases.owner
  address      text        NOT NULL,          -- where it serves gRPC
  role         text        NOT NULL,          -- owner | standby
  started_at   timestamptz NOT NULL,
  heartbeat_at timestamptz NOT NULL
);
