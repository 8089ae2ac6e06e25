-- 0002_leases: ownership of the work by lease rows, and the fence every write checks.
--
-- A lease row names something exactly one live server may act on ("partition/0": the
-- tasks; later one row per partition and per singleton job). The owner renews it before
-- `expires_at`, which is always the database's clock (now()), never a server's. Every
-- change of owner increments `epoch`. No session advisory locks: a dropped connection
-- would lose them silently while the old owner keeps running, and they do not work behind
-- PgBouncer in transaction mode.
CREATE TABLE leases (
  name       text COLLATE "C" PRIMARY KEY,
  owner      text        NOT NULL,  -- the server's id: host:port/pid/start time
  epoch      bigint      NOT NULL,
  expires_at timestamptz NOT NULL,
  renewed_at timestamptz NOT NULL,
  address    text        NOT NULL DEFAULT ''  -- where the owner serves gRPC
);

-- The fence: the first statement of every write transaction of an owner. It takes a key-share
-- lock on the lease row; a server taking the lease over first locks the row FOR UPDATE, which
-- waits for every writer's transaction to end, and every transaction after the takeover sees
-- the new epoch and fails here with SQLSTATE DR001: a paused or cut-off former owner can
-- write nothing once it has been replaced. Renewals (UPDATEs of non-key columns) do not
-- conflict with key-share locks, so a long commit does not hold up the holder's renewal.
CREATE FUNCTION drover_fence(p_name text, p_owner text, p_epoch bigint) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM 1 FROM leases WHERE name = p_name AND owner = p_owner AND epoch = p_epoch FOR KEY SHARE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'lease % is no longer held by % at epoch %', p_name, p_owner, p_epoch
      USING ERRCODE = 'DR001';
  END IF;
END
$$;
