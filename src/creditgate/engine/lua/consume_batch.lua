-- consume_batch.lua: several CheckAndConsume charges of one account, all of the same action,
-- quantity and attributes, answered in one call by charge.lua's charge(), in order.
--
-- The sidecar's pipelined connection sends this for charges of one account that queued up while
-- earlier commands were in flight (driver/pipelined.py), instead of one consume call each. Each
-- charge is still all or nothing and makes exactly the writes a consume call would; the calls
-- that consume.lua's first branch would not answer (a repeated request id, a denial, anything
-- due) are left to consume, which the sidecar sends for them next.
-- KEYS: [1..4] as in lib.lua, then the idempotency record of each of the n requests.
-- ARGV: consume.lua's, with the first request's id at ARG0 + 1 and the ids of requests 2..n
--   after the last (ARG0 + 12 on).
-- Reply: the replies of the first m requests (0 <= m <= n), each as consume.lua's allowed
--   reply; requests m + 1..n were not charged and nothing was written for them.
local np = ARGV[4] + 0
local a0 = 6 + np * 10
local n = #KEYS - 4
local done = {}
if ARGV[a0] == 'C' and ARGV[a0 + 8] == '0' then
  local A, open, _, now, no_due_holds = open_account(np)
  if open and no_due_holds then
    for i = 1, n do
      local rk = KEYS[4 + i]
      if redis.call('GET', rk) then break end
      local out = charge(A, now, np, a0, rk, i == 1 and ARGV[a0 + 1] or ARGV[a0 + 10 + i])
      if not out then break end
      done[i] = out
    end
  end
end
return done
