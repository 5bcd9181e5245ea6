-- consume_fast.lua: the common CheckAndConsume, answered by fast.lua's fast_charge() before
-- lib.lua's prelude is built.
--
-- It reads the account, the request's idempotency record, TIME and whether a hold is due. When
-- the account is on the caller's plan, neither suspended nor stopped, the request id is new and
-- no hold is due, fast_charge() tries the charge. Anything it does not answer, including every
-- denial, falls through to the general path with nothing written, but with what was read in the
-- PRE_ locals (the account fields, the idempotency record, TIME and whether a hold is due), so
-- the general path does not read them a second time.
-- KEYS and ARGV: consume.lua's.
-- Reply: fast_charge()'s (consume.lua's allowed reply) when it answers; otherwise none here:
--   lib.lua and consume.lua follow and answer.
do
  local np = ARGV[4] + 0
  local a0 = 5 + np * 10
  if ARGV[a0] == 'C' and ARGV[a0 + 8] == '0' then
    local A = fast_account()
    PRE_A = A  -- handed to lib.lua as read: fast_charge() changes A only when it answers
    if fast_open(A) then PRE_REC = redis.call('GET', KEYS[5]) end
    if PRE_REC == false then
      local now
      PRE_T, now, PRE_NO_DUE_HOLDS = fast_now(A)
      if PRE_NO_DUE_HOLDS then
        local out = fast_charge(A, now, np, a0, KEYS[5], ARGV[a0 + 1])
        if out then return out end
      end
    end
  end
end
