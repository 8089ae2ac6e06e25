-- 0004_audit: the audit log (docs/security.md#audit-log): one row per state-changing call
-- and per refused call. `seq` orders the log and pages through it; the blob is a
-- drover.v1.AuditRecord (who, from where, what, on which objects, allowed or why not).
--
-- Append-only: no statement drover runs updates a row, and this trigger refuses any UPDATE
-- made by hand. Deletes are the retention sweep's (by age, through audit_by_time).
CREATE TABLE audit (
  seq       INTEGER PRIMARY KEY AUTOINCREMENT,
  unix_ms   INTEGER NOT NULL,
  principal TEXT    NOT NULL,
  tenant    TEXT    NOT NULL,
  blob      BLOB    NOT NULL
) STRICT;

CREATE INDEX audit_by_time ON audit (unix_ms);

CREATE TRIGGER audit_append_only BEFORE UPDATE ON audit
BEGIN
  SELECT RAISE(ABORT, 'audit records are append-only');
END;
