-- 0004: webhook notifications (creditgate.notify, docs/NOTIFICATIONS.md): the endpoints, the
-- notifications raised (one row each, idempotent on id), the outbox of pending deliveries (one
-- row per notification and endpoint) and the log of every delivery attempt.
CREATE TABLE webhook_endpoints (
  endpoint_id     TEXT PRIMARY KEY,
  account         TEXT NOT NULL,           -- '' : global, every account's notifications
  url             TEXT NOT NULL,
  secrets         TEXT NOT NULL,           -- JSON list of whsec_ secrets, newest first
  kinds           TEXT NOT NULL,           -- comma-separated notification kinds; '': all
  enabled         INTEGER NOT NULL,        -- 1 / 0
  disabled_reason TEXT NOT NULL,           -- why it was disabled ('' while enabled)
  created_ms      BIGINT NOT NULL
);
CREATE INDEX webhook_endpoints_account ON webhook_endpoints (account);
CREATE TABLE notifications (
  seq             BIGSERIAL PRIMARY KEY,
  notification_id TEXT NOT NULL UNIQUE,    -- the webhook-id header
  account         TEXT NOT NULL,
  kind            TEXT NOT NULL,
  source          TEXT NOT NULL,           -- the stream event id, or 'api'
  payload         TEXT NOT NULL,           -- the JSON body, exactly as signed
  created_ms      BIGINT NOT NULL
);
CREATE INDEX notifications_account ON notifications (account, seq);
CREATE TABLE webhook_deliveries (
  notification_id TEXT NOT NULL,
  endpoint_id     TEXT NOT NULL,
  state           TEXT NOT NULL,           -- pending, delivered, failed (gave up), dropped
  attempts        INTEGER NOT NULL,
  next_ms         BIGINT NOT NULL,           -- when pending: the next attempt is due
  last_status     INTEGER NOT NULL,        -- HTTP status of the last attempt; 0: none/no answer
  updated_ms      BIGINT NOT NULL,
  PRIMARY KEY (notification_id, endpoint_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (state, next_ms);
CREATE TABLE webhook_attempts (
  id              BIGSERIAL PRIMARY KEY,
  notification_id TEXT NOT NULL,
  endpoint_id     TEXT NOT NULL,
  attempt         INTEGER NOT NULL,
  time_ms         BIGINT NOT NULL,
  status          INTEGER NOT NULL,        -- HTTP status; 0: no answer (see error)
  error           TEXT NOT NULL,
  duration_ms     INTEGER NOT NULL
);
CREATE INDEX webhook_attempts_notification ON webhook_attempts (notification_id, id);
