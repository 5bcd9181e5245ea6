-- lib.lua: the prelude of every creditgate script but consume_batch, after core.lua (and, for
-- consume, after its first branch, consume.lua): the account, its pools, events and the general
-- path's rules.
--
-- Units: every amount is an integer count of micro-units (1 credit or 1 USD = 1,000,000).
-- Lua 5.1 numbers are doubles, exact for integers below 2^53; the Python side keeps every
-- input below MAX (2^52) so that products checked here stay exact. Numbers are written back with
-- string.format('%d') because tostring() would print 15-digit amounts in exponent form.
--
-- Common KEYS: [1] account hash, [2] the shard's event stream, [3] the account's holds hash,
--              [4] the account's hold-expiry sorted set, [5..] per script.
-- Common ARGV: [1] account id, [2] plan id the caller priced with (with '#' and the key of
--              the account's terms, 'tk', when it has terms), [3] '1' on a test-clock
--              server (the account's time is its frozen 'clk' field), [4] pool count N, then
--              10 fields per pool in consumption order: id, kind (A allowance, G grant,
--              B money balance, O overage, P payg), period (day|month|cycle|''), amount, rate
--              (money micro-units per meter unit for this call's meter, 0 if none), block size
--              (a balance pool: its default low-balance threshold), block price, default cap
--              (-1: none), eligible ('1'/'0'), enabled by default ('1'/'0'), then [5 + 10 N]
--              the plan's recurring charges ('' none; recurring.lua's recurring()). Script
--              arguments follow, from ARG0 = 6 + 10 N on.
-- Replies are arrays whose first element is 'OK' or an error code the engine maps to a status.

local DAY = 86400000

local function fmt(n) return string.format('%d', n) end

-- The same, rounded down: what a refund returns for part of a money debit.
local function money_floor(m, rate)
  local q = idiv(m, MICRO)
  return q * rate + idiv((m - q * MICRO) * rate, MICRO)
end

-- Calendar (Howard Hinnant's days_from_civil / civil_from_days), UTC.
local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local mp = (m + 9) % 12
  local doy = math.floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end

local function civil_from_days(z)
  z = z + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
    - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400
  if m <= 2 then y = y + 1 end
  return y, m, d
end

local function month_start(y, m, anchor)
  local ny, nm = y, m + 1
  if nm == 13 then ny, nm = y + 1, 1 end
  local dim = days_from_civil(ny, nm, 1) - days_from_civil(y, m, 1)
  return days_from_civil(y, m, math.min(anchor, dim)) * DAY
end

-- The first period boundary strictly after `now` (ms). 'month' renews on the 1st, 'cycle' on
-- the account's anchor day, clamped to the month's last day.
local function next_reset(period, now, anchor)
  if period == 'day' then return (math.floor(now / DAY) + 1) * DAY end
  if period == 'month' then anchor = 1 end
  local y, m = civil_from_days(math.floor(now / DAY))
  local cand = month_start(y, m, anchor)
  if cand > now then return cand end
  m = m + 1
  if m == 13 then y, m = y + 1, 1 end
  return month_start(y, m, anchor)
end

-- Account state ---------------------------------------------------------------------------

local ACCT = ARGV[1]
local A = PRE_A  -- the fields, as a fast path that fell through read them
if not A then
  A = {}
  local raw = redis.call('HGETALL', KEYS[1])
  for i = 1, #raw, 2 do A[raw[i]] = raw[i + 1] end
end
local EXISTS = A.plan ~= nil
local NOW
do
  local t = PRE_T or redis.call('TIME')
  NOW = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  -- A test clock is frozen per account (like Stripe's test clocks): it moves only when advanced.
  if ARGV[3] == '1' and A.clk then NOW = tonumber(A.clk) end
end
local ANCHOR = tonumber(A.anc) or 1
local W = {}            -- account fields to write back
local function put(f, v) A[f] = v; W[f] = true end

local POOLS, BYID = {}, {}
local NP = tonumber(ARGV[4])
local ARG0 = 6 + NP * 10  -- first script-specific ARGV

local function load_lots(p)
  local raw = A['L:' .. p.id]
  p.lots = raw and cmsgpack.unpack(raw) or {}
  local b = 0
  for _, l in ipairs(p.lots) do b = b + l[2] end
  p.b = b
end

-- (Re)builds plan pool `i` from the account's fields: at the start, and after a charge wrote
-- its fields through put().
local function load_pool(i)
  local j = i * 10 - 5
  local id, k = ARGV[j], ARGV[j + 1]
  -- Only the fields a pool of this kind uses are read (tonumber is strtod, the costliest
  -- step here); the rest keep neutral values. `o` is an allowance's debt: this period's use
  -- beyond its amount after a plan change to a smaller allowance; returns pay it off first,
  -- the next reset clears it.
  local p = {id = id, kind = k, period = ARGV[j + 2], amount = 0, rate = 0, bs = 0, bp = 0,
    elig = ARGV[j + 8] == '1', b = 0, s = 0, o = 0, c = -1, en = false}
  local e = A['e:' .. id]
  if e == nil then e = ARGV[j + 9] end
  p.en = e == '1'
  local rate = ARGV[j + 4]
  if rate ~= '0' then p.rate = tonumber(rate) end
  if k == 'G' then
    load_lots(p)
  else
    if k ~= 'P' then p.b = tonumber(A['b:' .. id]) or 0 end
    if k ~= 'B' then
      p.r = tonumber(A['r:' .. id])
      local o = A['o:' .. id]
      if o then p.o = tonumber(o) end
    end
    if k == 'A' then
      p.amount = tonumber(ARGV[j + 3])
    elseif k == 'O' or k == 'P' then
      p.s = tonumber(A['s:' .. id]) or 0
      p.c = tonumber(A['c:' .. id]) or tonumber(ARGV[j + 7])
      if k == 'O' then p.bs, p.bp = tonumber(ARGV[j + 5]), tonumber(ARGV[j + 6]) end
    end
  end
  POOLS[i] = p
  BYID[id] = p
end

for i = 1, NP do load_pool(i) end

-- A pool a hold or charge names that the current plan no longer has: its money is kept in the
-- account hash, its credits can only expire.
local function ghost(id, kind)
  local p = {id = id, kind = kind, ghost = true, b = tonumber(A['b:' .. id]) or 0, s = 0, c = -1, o = 0,
    period = '', amount = 0, rate = 0, bs = 0, bp = 0, en = false, elig = false}
  if kind == 'G' then load_lots(p) end
  BYID[id] = p
  return p
end

local function remaining(p) return left(p.kind, p.b, p.c, p.s) end

-- Events ----------------------------------------------------------------------------------

local EV = {}
-- The call's request id and action (for events), and `unpaid`: the id of a recurring charge
-- left unpaid whose on_short is 'stop' (recurring.lua), which stops the account.
local CTX = {rid = '', act = '', q = '', at = '', unpaid = nil}
-- What this call changed besides account fields, carried by its last event so that the ledger
-- can rebuild Redis exactly: holds (id -> packed hold, false when gone) and idempotency records
-- (key -> {packed record, TTL ms or -1 to keep the previous expiry}).
local SNAP_H, SNAP_R = {}, {}
local SNAPPED = false

local function set_record(key, value, ttl)
  write_record(SNAP_R, key, value, ttl)
  SNAPPED = true
end

local function set_hold(id, value, exp)
  write_hold(SNAP_H, id, value, exp)
  SNAPPED = true
end

local function mv(p, delta, lot)
  return move(p.id, delta, fmt(remaining(p)), lot)
end

local function emit(kind, moves, extra, rid)
  EV[#EV + 1] = {kind, moves, extra, rid}
end

local function flush()
  for _, p in ipairs(POOLS) do
    if p.dirty then
      if p.kind == 'G' then put('L:' .. p.id, cmsgpack.pack(p.lots))
      elseif p.kind ~= 'P' then put('b:' .. p.id, p.b) end
      if p.o > 0 or A['o:' .. p.id] then put('o:' .. p.id, p.o > 0 and p.o or nil) end
      if p.r then put('r:' .. p.id, p.r) end
      if p.kind == 'O' or p.kind == 'P' then put('s:' .. p.id, p.s) end
    end
  end
  for id, p in pairs(BYID) do
    if p.ghost and p.dirty then
      if p.kind == 'G' then put('L:' .. id, cmsgpack.pack(p.lots)) else put('b:' .. id, p.b) end
    end
  end
  local args, snap_a = {}, {}
  for f in pairs(W) do
    local v = A[f]
    if type(v) == 'number' then v = fmt(v) end
    if v == nil then
      redis.call('HDEL', KEYS[1], f)
      snap_a[f] = false
    else
      args[#args + 1] = f; args[#args + 1] = v
      snap_a[f] = v
    end
    SNAPPED = true
  end
  if #args > 0 then redis.call('HSET', KEYS[1], unpack(args)) end
  if SNAPPED and #EV == 0 then EV[1] = {'state', {}, nil, ''} end
  for i, e in ipairs(EV) do
    local f = {}
    if e[4] == nil and CTX.act ~= '' then
      f[1] = 'act'; f[2] = CTX.act
      f[3] = 'q'; f[4] = CTX.q
      f[5] = 'at'; f[6] = CTX.at
    end
    if e[3] then for _, x in ipairs(e[3]) do f[#f + 1] = x end end
    if i == #EV and SNAPPED then
      f[#f + 1] = 'st'
      f[#f + 1] = cmsgpack.pack({a = snap_a, h = SNAP_H, r = SNAP_R})
    end
    write_event(e[1], e[4] or CTX.rid, NOW, e[2], unpack(f))
  end
  -- Written: a later flush() writes only what changes after this one.
  for _, p in pairs(BYID) do p.dirty = nil end
  W, EV, SNAP_H, SNAP_R, SNAPPED = {}, {}, {}, {}, false
end

-- Takes what the charge's take() wrote (`fields`, flat name, value) into the account state:
-- the fields to write back, and the plan pools rebuilt from them.
local function put_charge(fields)
  for f = 1, #fields, 2 do put(fields[f], fields[f + 1]) end
  for i = 1, NP do load_pool(i) end
end
