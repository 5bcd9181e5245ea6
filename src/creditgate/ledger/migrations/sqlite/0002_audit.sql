-- 0002: the audit trail of admin changes (CreateAccount, UpdateAccount, Grant, SetPoolSettings,
-- AdvanceTestClock): who made it, what they asked, and the account before and after.
CREATE TABLE audit (
  id           INTEGER PRIMARY KEY AUTOINCREMENT,
  time_ms      INTEGER NOT NULL,            -- wall clock of the server, unix ms
  principal    TEXT NOT NULL,            -- token name; '-' when the server runs without auth
  role         TEXT NOT NULL,            -- the token's role; '-' without auth
  rpc          TEXT NOT NULL,            -- e.g. 'AdminService/Grant'
  account      TEXT NOT NULL,
  request      TEXT NOT NULL,            -- JSON of the request's fields
  state_before TEXT,                     -- JSON of the account (GetBalance form); NULL: created
  state_after  TEXT NOT NULL             -- JSON of the account after the change
);
CREATE INDEX audit_account ON audit (account, id);
