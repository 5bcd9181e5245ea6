-- consume_batch.lua: several CheckAndConsume charges of one account, all of the same action,
-- quantity and attributes, answered in one call by charge() (charge.lua), in order.
--
-- The sidecar's pipelined connection sends this for charges of one account that queued up while
-- earlier commands were in flight (engine/fastpath.py), instead of one consume call each. Each
-- charge is still all or nothing and makes exactly the writes a consume call would. It answers
-- only the common case: while nothing is due, the charges that are allowed, in order. It stops
-- at the first that is not (a repeated request id, a denial) and writes nothing for it; the
-- sidecar sends that one and the rest as consume calls next.
-- KEYS: [1..4] as in lib.lua, then the idempotency record of each of the n requests.
-- ARGV: consume.lua's, with the first request's id at ARG0 + 1 and the ids of requests 2..n
--   after the last (ARG0 + 12 on).
-- Returns the replies of the first m requests (0 <= m <= n), each as consume.lua's allowed
--   reply; requests m + 1..n were not charged and nothing was written for them.
local done = {}
if ARGV[ARG0] == 'C' and ARGV[ARG0 + 8] == '0' and QUIET then
  for i = 1, #KEYS - 4 do
    local out = charge(KEYS[4 + i], i == 1 and ARGV[ARG0 + 1] or ARGV[ARG0 + 10 + i])
    if out[1] ~= 'OK' or out[2] ~= 1 then break end
    done[i] = out
  end
end
return done
