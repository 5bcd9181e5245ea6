-- consume.lua: CheckAndConsume (mode 'C') and Reserve (mode 'R') for one account.
-- KEYS: [1..4] as in lib.lua, [5] this request's idempotency record.
-- ARGV: common (lib.lua), then [ARG0] mode, [+1] request id, [+2] request fingerprint,
--   [+3] quantity, [+4] unit cost (meter micro-units per `per` units), [+5] per,
--   [+6] action, [+7] attributes (JSON text, for the event), [+8] dry run '1'/'0',
--   [+9] idempotency TTL ms, [+10] hold TTL ms (mode 'R'), [+11] the action's meter.
-- Reply: {'OK', allowed 0/1, reason, cost, retry_at ms, now ms, replayed 0/1, shortfall,
--   hold expires_at ms, n, n x (pool, amount, remaining, covered), remaining of each plan pool}
--   in micro-units; a repeated request id {'REPLAY', plan then, meter, the first reply}; or
--   {'NO_ACCOUNT'}, {'PLAN', plan, terms, key}, {'IDEM_MISMATCH', the first request's mode}, {'TOO_LARGE'}.
-- Only allowed, non-dry-run answers are recorded: a denied request may be retried as is.
--
-- The first branch is the common case, answered by charge.lua's charge() before lib.lua's
-- prelude is built: the account is on the caller's plan, neither suspended nor stopped, the
-- request id is new, no hold is due, and the charge is allowed with nothing due. Everything
-- else falls through to consume_general.lua (after lib.lua + rules.lua) with nothing written,
-- and with what was read in the PRE_ locals (the account fields, the idempotency record, TIME
-- and whether a hold is due; for a denial with nothing due, what was left uncovered and whether
-- a cap stopped it), so the general path neither reads nor walks a second time.
do
  local np = ARGV[4] + 0
  local a0 = 6 + np * 10
  local A, open, now
  A, open, PRE_T, now, PRE_NO_DUE_HOLDS = open_account(np)
  PRE_A = A  -- handed to lib.lua as read: charge() changes A only when it answers
  if open then
    PRE_REC = redis.call('GET', KEYS[5])
    if PRE_REC == false and PRE_NO_DUE_HOLDS then
      local out
      out, PRE_REM, PRE_CAPPED = charge(A, now, np, a0, KEYS[5], ARGV[a0 + 1])
      if out then return out end
    end
  end
end
