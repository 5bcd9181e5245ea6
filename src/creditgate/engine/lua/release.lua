-- release.lua: drop a hold, giving its credits back to the pools it came from.
-- KEYS: [1..4] as in lib.lua, [5] the reservation's record.
-- ARGV: common (lib.lua), then [ARG0] reservation id.
-- Reply: {'OK', released 0/1, returned meter micro-units, state, n,
--   n x (pool, amount (negative), remaining, covered (negative)), remaining of each plan pool};
--   released is 0 when the hold had already been released or had expired. Or {'NO_ACCOUNT'},
--   {'PLAN', plan, terms, key}, {'NOT_FOUND'}, {'NOT_RESERVATION', the record's mode}, {'SETTLED'}.
local err = check_plan()
if err then return err end
local rid = ARGV[ARG0]
CTX.rid = rid
local rec = redis.call('GET', KEYS[5])
if not rec then return {'NOT_FOUND'} end
local r = cmsgpack.unpack(rec)
if r.m ~= 'R' then return {'NOT_RESERVATION', r.m or ''} end
if r.st == 'settled' then return {'SETTLED'} end

maintain_all()
local raw = redis.call('HGET', KEYS[3], rid)
if r.st == 'released' or not raw then
  flush()
  return balances({'OK', 0, 0, r.st == 'released' and 'released' or 'expired', 0})
end
local h = cmsgpack.unpack(raw)
local moves, rets, total, expired = give_back(h.d, h.cov)
emit('release', moves)
expire_returns(expired)
set_hold(rid, nil)
r.st = 'released'
set_record(KEYS[5], cmsgpack.pack(r))
flush()
return balances(rows({'OK', 1, total, 'released'}, rets))
