-- 0004_audit: the audit log (docs/security.md#audit-log): one row per state-changing call
-- and per refused call. `seq` orders the log and pages through it; the blob is a
-- drover.v1.AuditRecord (who, from where, what, on which objects, allowed or why not).
--
-- Append-only: no statement drover runs updates a row, and this trigger refuses any UPDATE
-- made by hand. Deletes are the retention sweep's (by age, through audit_by_time).
CREATE TABLE audit (
  seq       bigserial PRIMARY KEY,
  unix_ms   bigint NOT NULL,
  principal text COLLATE "C" NOT NULL,
  tenant    text COLLATE "C" NOT NULL,
  blob      bytea  NOT NULL
);

CREATE INDEX audit_by_time ON audit (unix_ms);

CREATE FUNCTION drover_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'audit records are append-only';
END $$;

CREATE TRIGGER audit_append_only BEFORE UPDATE ON audit
  FOR EACH ROW EXECUTE FUNCTION drover_audit_append_only();
