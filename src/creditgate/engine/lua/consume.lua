-- consume.lua: CheckAndConsume (mode 'C') and Reserve (mode 'R') for one account: the general
-- path, after consume_fast.lua (and always for Reserve, dry runs and denials).
-- KEYS: [1..4] as in lib.lua, [5] this request's idempotency record.
-- ARGV: common (lib.lua), then [ARG0] mode, [+1] request id, [+2] request fingerprint,
--   [+3] quantity, [+4] unit cost (meter micro-units per `per` units), [+5] per,
--   [+6] action, [+7] attributes (JSON text, for the event), [+8] dry run '1'/'0',
--   [+9] idempotency TTL ms, [+10] hold TTL ms (mode 'R'), [+11] the action's meter.
-- Reply: {'OK', allowed 0/1, reason, cost, retry_at ms, now ms, replayed 0/1, shortfall,
--   hold expires_at ms, n, n x (pool, amount, remaining, covered), remaining of each plan pool}
--   in micro-units; a repeated request id {'REPLAY', plan then, meter, the first reply}; or
--   {'NO_ACCOUNT'}, {'PLAN', plan}, {'IDEM_MISMATCH', the first request's mode}, {'TOO_LARGE'}.
-- Only allowed, non-dry-run answers are recorded: a denied request may be retried as is.
local err = check_plan()
if err then return err end
local mode, rid, fp = ARGV[ARG0], ARGV[ARG0 + 1], ARGV[ARG0 + 2]
local dry = ARGV[ARG0 + 8] == '1'

local rec = PRE_REC
if rec == nil then rec = redis.call('GET', KEYS[5]) end
if rec then
  local r = cmsgpack.unpack(rec)
  if r.fp ~= fp then return {'IDEM_MISMATCH', r.m} end
  local rep = r.rep
  rep[7] = 1
  return {'REPLAY', r.pl or ARGV[2], r.mt or '', rep}
end

CTX.rid, CTX.act, CTX.q, CTX.at = rid, ARGV[ARG0 + 6], ARGV[ARG0 + 3], ARGV[ARG0 + 7]
maintain_all()
local uc, per = tonumber(ARGV[ARG0 + 4]), tonumber(ARGV[ARG0 + 5])
local D = demand(tonumber(ARGV[ARG0 + 3]), uc, per)
if D == nil then
  flush()
  return {'TOO_LARGE'}
end

local elig = eligible()
local reason, retry = account_block()
local takes, rem, capped = {}, D, false
if reason == nil then
  if #elig == 0 and D > 0 then
    reason, retry = R_NOT_ENTITLED, 0
  else
    takes, rem, capped = plan_charge(elig, D)
    if rem > 0 then
      reason = capped and R_CAP or R_INSUFFICIENT
      retry = retry_at(elig, D)
    end
  end
end

if reason ~= nil then
  flush()
  return balances(debit_rows({'OK', 0, reason, D, retry, NOW, 0, rem, 0}, {}))
end

if dry then
  -- What the charge would take, with each pool's balance as it would be afterwards: in the
  -- debits and in the balances alike, as the real charge would answer.
  local out = {'OK', 1, R_ALLOWED, D, 0, NOW, 0, 0, 0, #takes}
  local after = {}
  for _, t in ipairs(takes) do
    local p, amt = t[1], t[2]
    local left = after[p.id] or remaining(p)
    if p.kind == 'O' then left = left + t[4] * p.bs - amt
    elseif left >= 0 then left = left - amt end
    after[p.id] = left
    out[#out + 1] = p.id; out[#out + 1] = amt; out[#out + 1] = left; out[#out + 1] = t[3]
  end
  flush()
  for _, p in ipairs(POOLS) do
    local left = after[p.id]
    if left == nil then left = remaining(p) end
    out[#out + 1] = left
  end
  return out
end

local debits, moves = apply(takes)
local exp = 0
if mode == 'R' then
  exp = NOW + tonumber(ARGV[ARG0 + 10])
  local el = {}
  for _, e in ipairs(elig) do el[#el + 1] = {e[1].id, e[2]} end
  set_hold(rid, cmsgpack.pack({d = debits, cov = D, uc = uc, per = per, el = el, exp = exp,
    mt = ARGV[ARG0 + 11]}), exp)
  emit('hold', moves, {'expires', fmt(exp)})
else
  emit('charge', moves)
end
local out = balances(debit_rows({'OK', 1, R_ALLOWED, D, 0, NOW, 0, 0, exp}, debits))
set_record(KEYS[5], request_record(ARG0, mode, out, debits, D, uc, per), ARGV[ARG0 + 9])
flush()
return out
