-- 0001: the ledger. Amounts are integer micro-units of the pool's unit. `ver` orders the events
-- of one account: stream entry ms x 10^6 + entry sequence.
CREATE TABLE events (
  event_id   TEXT PRIMARY KEY,          -- '<shard stream>/<entry id>': the idempotency key
  ver        BIGINT NOT NULL,
  account    TEXT NOT NULL,
  kind       TEXT NOT NULL,
  request_id TEXT NOT NULL,
  time_ms    BIGINT NOT NULL,          -- the account's clock
  action     TEXT,
  quantity   BIGINT,
  attributes TEXT,                      -- JSON object
  extra      TEXT NOT NULL,             -- JSON object of kind-specific fields
  moves      TEXT NOT NULL              -- the raw 'm' field
);
CREATE INDEX events_account ON events (account, ver);

CREATE TABLE movements (
  event_id      TEXT NOT NULL,
  seq           INTEGER NOT NULL,
  ver           BIGINT NOT NULL,
  account       TEXT NOT NULL,
  pool          TEXT NOT NULL,
  delta         BIGINT NOT NULL,
  balance_after BIGINT NOT NULL,        -- payg pools: what the cap still allows (-1: no cap)
  lot           TEXT,
  kind          TEXT NOT NULL,
  request_id    TEXT NOT NULL,
  origin        TEXT NOT NULL,           -- the charge or hold the movement belongs to
  time_ms       BIGINT NOT NULL,
  PRIMARY KEY (event_id, seq)
);
CREATE INDEX movements_history ON movements (account, ver DESC, seq DESC);
CREATE INDEX movements_time ON movements (account, time_ms);

CREATE TABLE requests (                  -- what each charge or hold was for (usage by action)
  account    TEXT NOT NULL,
  request_id TEXT NOT NULL,
  action     TEXT NOT NULL,
  quantity   BIGINT,
  attributes TEXT,
  PRIMARY KEY (account, request_id)
);

CREATE TABLE accounts (
  account   TEXT PRIMARY KEY,
  stream    TEXT NOT NULL,
  first_ver BIGINT NOT NULL,
  last_ver  BIGINT NOT NULL
);

CREATE TABLE pool_balances (
  account TEXT NOT NULL,
  pool    TEXT NOT NULL,
  balance BIGINT NOT NULL,
  ver     BIGINT NOT NULL,
  PRIMARY KEY (account, pool)
);

-- Mirror of the Redis state, for hydration and reconciliation. A NULL value is a deletion kept
-- as a tombstone so that an older event applied late cannot bring the row back.
CREATE TABLE account_fields (
  account TEXT NOT NULL,
  field   TEXT NOT NULL,
  value   BYTEA,
  ver     BIGINT NOT NULL,
  PRIMARY KEY (account, field)
);

CREATE TABLE holds (
  account    TEXT NOT NULL,
  hold_id    TEXT NOT NULL,
  value      BYTEA,
  expires_at BIGINT,
  ver        BIGINT NOT NULL,
  PRIMARY KEY (account, hold_id)
);

CREATE TABLE records (
  key        TEXT PRIMARY KEY,           -- the full Redis key
  account    TEXT NOT NULL,
  value      BYTEA NOT NULL,
  expires_at BIGINT,                    -- absolute ms (Redis server clock); NULL: none known
  ver        BIGINT NOT NULL
);
CREATE INDEX records_account ON records (account, expires_at);
