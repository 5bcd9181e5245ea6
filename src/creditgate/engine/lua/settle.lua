-- settle.lua: charge the real quantity against a hold.
-- Less than held gives the rest back to the pools it came from (newest first); more charges the
-- extra, all or nothing, through the pools that were in scope at Reserve time.
-- KEYS: [1..4] as in lib.lua, [5] the reservation's record.
-- ARGV: common (lib.lua), then [ARG0] quantity, [+1] reservation id.
-- Reply: {'OK', cost, held, fully_charged 0/1, shortfall, reason, replayed 0/1, meter, n,
--   n x (pool, amount, remaining, covered) net per debit, remaining of each plan pool}; a second
--   Settle {'REPLAY', plan then, meter, the first answer}; or {'NO_ACCOUNT'}, {'PLAN', plan, terms, key},
--   {'NOT_FOUND'}, {'NOT_RESERVATION', the record's mode}, {'RELEASED'},
--   {'EXPIRED', expires_at ms}, {'TOO_LARGE'}.
local err = check_plan()
if err then return err end
local rid = ARGV[ARG0 + 1]
CTX.rid = rid
local rec = redis.call('GET', KEYS[5])
if not rec then return {'NOT_FOUND'} end
local r = cmsgpack.unpack(rec)
if r.m ~= 'R' then return {'NOT_RESERVATION', r.m or ''} end
if r.st == 'settled' then
  local rep = r.srep
  rep[7] = 1
  return {'REPLAY', r.spl or ARGV[2], rep[8], rep}
end
if r.st == 'released' then return {'RELEASED'} end

maintain_all()
flush()  -- written before charge.lua's walk() reads the account's fields
local raw = redis.call('HGET', KEYS[3], rid)
if not raw then return {'EXPIRED', r.rep[9]} end
local h = cmsgpack.unpack(raw)
local Da = demand(tonumber(ARGV[ARG0]), h.uc, h.per)
if Da == nil then return {'TOO_LARGE'} end

local charged, fully, shortfall, reason = Da, 1, 0, R_ALLOWED
if Da <= h.cov then
  local moves, _, _, expired = give_back(h.d, h.cov - Da)
  emit('settle', moves, {'held', fmt(h.cov), 'charged', fmt(Da)})
  expire_returns(expired)
else
  -- The extra goes through the pools in scope at Reserve time, at their rates then.
  local el = {}
  for _, e in ipairs(h.el) do el[e[1]] = e[2] end
  local extra = Da - h.cov
  local block = account_block()
  local T, rem, capped, bal, lots
  if block == nil then T, rem, capped, bal, lots = walk(A, NOW, extra, NP, el)
  else rem, capped = extra, false end
  local moves = {}
  if rem == 0 then
    local debits, fields, pre
    debits, moves, fields, pre = take(A, T, bal, lots, false, {}, NOW, rid)
    put_charge(fields)
    for _, e in ipairs(pre or {}) do emit(e[1], e[3], e[4], e[2]) end
    for _, d in ipairs(debits) do h.d[#h.d + 1] = d end
  else
    charged, fully, shortfall = h.cov, 0, extra
    reason = block or (capped and R_CAP or R_INSUFFICIENT)
  end
  emit('settle', moves, {'held', fmt(h.cov), 'charged', fmt(charged), 'shortfall', fmt(shortfall)})
end

set_hold(rid, nil)
local out = balances(debit_rows({'OK', charged, h.cov, fully, shortfall, reason, 0, h.mt}, h.d))
r.st, r.d, r.cov, r.uc, r.per, r.ref, r.srep = 'settled', h.d, charged, h.uc, h.per, 0, out
r.spl = ARGV[2]
set_record(KEYS[5], cmsgpack.pack(r))
flush()
return out
