-- 0003: one-time credit purchases (seed 003), one row per purchase id. Only the payment
-- provider's references are kept, never card data.
CREATE TABLE purchases (
  id           TEXT PRIMARY KEY,          -- the caller's purchase id (idempotency)
  account      TEXT NOT NULL,
  amount       BIGINT NOT NULL,             -- micro-units of unit ($1 = 1,000,000)
  unit         TEXT NOT NULL,             -- e.g. 'usd'
  status       TEXT NOT NULL,             -- pending, succeeded or failed
  provider     TEXT NOT NULL,             -- which provider charged (the test provider says so)
  provider_ref TEXT NOT NULL DEFAULT '',  -- the provider's payment id (e.g. pi_...)
  failure      TEXT NOT NULL DEFAULT '',  -- decline code and message of a failed purchase
  created      BIGINT NOT NULL              -- wall clock of the server at the first attempt, unix ms
);
CREATE INDEX purchases_account ON purchases (account, created);
