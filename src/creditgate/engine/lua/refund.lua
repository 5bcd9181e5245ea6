-- refund.lua: return a charge (or a settled reservation), fully or in part, to its pools.
-- Part of a charge (quantity > 0) is valued rounded down. Newest debits are returned first;
-- money is returned rounded down except for the last part of a debit, which returns exactly
-- what is left of it.
-- KEYS: [1..4] as in lib.lua, [5] this refund's idempotency record, [6] the charge's record.
-- ARGV: common (lib.lua), then [ARG0] refund id, [+1] fingerprint, [+2] quantity (0: all that
--   is left), [+3] idempotency TTL ms, [+4] the charge's request id.
-- Reply: {'OK', refunded, still refundable, replayed 0/1, meter, n,
--   n x (pool, amount (negative), remaining, covered (negative)), remaining of each plan pool};
--   a repeated refund id {'REPLAY', plan then, meter, the first reply}; or {'NO_ACCOUNT'},
--   {'PLAN', plan, terms, key}, {'IDEM_MISMATCH', 'F'}, {'NOT_FOUND'}, {'NOT_CHARGE'} (the id names a grant
--   or a refund), {'NOT_SETTLED'}, {'EXCEEDS', left} (also when nothing is left),
--   {'TOO_LARGE'}.
local err = check_plan()
if err then return err end
local fid, fp = ARGV[ARG0], ARGV[ARG0 + 1]
local rec = redis.call('GET', KEYS[5])
if rec then
  local r = cmsgpack.unpack(rec)
  if r.fp ~= fp then return {'IDEM_MISMATCH', 'F'} end
  local rep = r.rep
  rep[4] = 1
  return {'REPLAY', r.pl or ARGV[2], rep[5], rep}
end
local orec = redis.call('GET', KEYS[6])
if not orec then return {'NOT_FOUND'} end
local o = cmsgpack.unpack(orec)
if o.m ~= 'C' and o.m ~= 'R' then return {'NOT_CHARGE'} end
if o.m == 'R' and o.st ~= 'settled' then return {'NOT_SETTLED'} end

CTX.rid = fid
maintain_all()
local left = o.cov - o.ref
local R = left
local q = tonumber(ARGV[ARG0 + 2])
if q > 0 then
  -- Part of a charge is valued rounded down (the charge itself was rounded up), so refunding
  -- unit by unit never asks for more than is left; quantity 0 returns exactly what is left.
  local prod = q * o.uc
  R = prod <= MAX and idiv(prod, o.per) or nil
end
if R == nil then
  flush()
  return {'TOO_LARGE'}
end
if R > left or left == 0 then
  flush()
  return {'EXCEEDS', left}
end
local moves, rets, total, expired = give_back(o.d, R)
emit('refund', moves, {'of', ARGV[ARG0 + 4]})
expire_returns(expired)
o.ref = o.ref + total
set_record(KEYS[6], cmsgpack.pack(o))
local out = balances(rows({'OK', total, left - total, 0, o.mt}, rets))
set_record(KEYS[5], cmsgpack.pack({fp = fp, rep = out, m = 'F', pl = ARGV[2]}), ARGV[ARG0 + 3])
flush()
return out
