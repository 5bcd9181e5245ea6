-- lib.lua: the prelude every creditgate script starts with (the loader prepends it, then
-- general.lua and charge.lua; see engine/scripts.py).
--
-- Units: every amount is an integer count of micro-units (1 credit or 1 USD = 1,000,000).
-- Lua 5.1 numbers are doubles, exact for integers below 2^53; the Python side keeps every
-- input below MAX (2^52) so that products checked here stay exact. Numbers are written back with
-- string.format('%d') because tostring() would print 15-digit amounts in exponent form.
-- Numeric strings that are always numbers (ARGV, TIME, fields these scripts write) are converted
-- with `x + 0`, which parses once; tonumber() parses twice and is kept for what may be absent.
--
-- Common KEYS: [1] account hash, [2] the shard's event stream, [3] the account's holds hash,
--              [4] the account's hold-expiry sorted set, [5..] per script.
-- Common ARGV: [1] account id, [2] plan id the caller priced with, [3] '1' on a test-clock
--              server (the account's time is its frozen 'clk' field), [4] pool count N, then 10
--              fields per pool in consumption order: id, kind (A allowance, G grant, B money
--              balance, O overage, P payg), period (day|month|cycle|''), amount, rate (money
--              micro-units per meter unit for this call's meter, 0 if none), block size, block
--              price, default cap (-1: none), eligible ('1'/'0'), enabled by default ('1'/'0').
--              Script arguments follow, from ARG0 on.
-- Replies are arrays whose first element is 'OK' or an error code the engine maps to a status.
--
-- Cost: Redis runs the whole text on every call, and each `local function` makes a closure
-- then (0.5k to 2.5k instructions, more with more upvalues). So the prelude holds only what
-- every call needs; what only the general path needs (period resets, expiries, returns, the
-- retry time of a denial) is built by general() (general.lua) when a call first needs it.
-- bench/script_cost.py measures a consume call.

local MICRO = 1000000
local MAX = 4503599627370495
local DAY = 86400000

local function fmt(n) return string.format('%d', n) end

-- floor(a / b) for 0 <= a, 0 < b, both below 2^52; the float quotient can be off by one.
local function idiv(a, b)
  local q = math.floor(a / b)
  while q * b > a do q = q - 1 end
  while (q + 1) * b <= a do q = q + 1 end
  return q
end

local function ceil_div(a, b)
  local q = idiv(a, b)
  if q * b < a then q = q + 1 end
  return q
end

-- Money for `m` meter micro-units at `rate` money micro-units per meter unit, rounded up
-- (never in the caller's favour). Split so that no product exceeds 2^53.
local function money_ceil(m, rate)
  local q = idiv(m, MICRO)
  return q * rate + ceil_div((m - q * MICRO) * rate, MICRO)
end

-- Meter micro-units that `money` pays for at `rate`, rounded down.
local function meter_floor(money, rate)
  local q = idiv(money, rate)
  return q * MICRO + idiv((money - q * rate) * MICRO, rate)
end

-- Meter micro-units for `q` units at `uc` micro-units per `per` units, rounded up; nil when the
-- product is too large to be exact.
local function demand(q, uc, per)
  local prod = q * uc
  if prod > MAX then return nil end
  return ceil_div(prod, per)
end

-- Account state ---------------------------------------------------------------------------

local ACCT = ARGV[1]
local A = {}  -- the account's fields
do
  local raw = redis.call('HGETALL', KEYS[1])
  for i = 1, #raw, 2 do A[raw[i]] = raw[i + 1] end
end
local EXISTS = A.plan ~= nil
local NOW
do
  local t = redis.call('TIME')
  NOW = t[1] * 1000 + math.floor(t[2] / 1000)
  -- A test clock is frozen per account (like Stripe's test clocks): it moves only when advanced.
  if ARGV[3] == '1' and A.clk then NOW = tonumber(A.clk) end
end
local ANCHOR  -- the account's cycle day, set by general()
local W = {}  -- account fields to write back
local function put(f, v) A[f] = v; W[f] = true end

-- The general path's functions, built by general() (general.lua) on first use.
local general, money_floor, civil_from_days, next_reset, maintain, sort_lots, ghost, give_back,
  expire_returns, expire_holds, capacity, retry_at, rows

-- Pools -----------------------------------------------------------------------------------

local POOLS, BYID = {}, {}
local NP = ARGV[4] + 0
local ARG0 = 5 + NP * 10  -- first script-specific ARGV

-- A grant pool's lots, {id, amount, expires ms (0: never)} soonest-expiring first, and their sum.
local function load_lots(p)
  local raw = A['L:' .. p.id]
  p.lots = raw and cmsgpack.unpack(raw) or {}
  local b = 0
  for _, l in ipairs(p.lots) do b = b + l[2] end
  p.b = b
end

for i = 0, NP - 1 do
  local j = 5 + i * 10
  local id, k = ARGV[j], ARGV[j + 1]
  -- Only the fields a pool of this kind uses are read (parsing numbers is the costliest step
  -- here); the rest keep neutral values. `o` is an allowance's debt: this period's use beyond
  -- its amount after a plan change to a smaller allowance; returns pay it off first, the next
  -- reset clears it.
  local p = {id = id, kind = k, period = ARGV[j + 2], amount = 0, rate = 0, bs = 0, bp = 0,
    elig = ARGV[j + 8] == '1', b = 0, s = 0, o = 0, c = -1, en = false}
  local e = A['e:' .. id]
  if e == nil then e = ARGV[j + 9] end
  p.en = e == '1'
  local rate = ARGV[j + 4]
  if rate ~= '0' then p.rate = rate + 0 end
  if k == 'G' then
    load_lots(p)
  else
    if k ~= 'P' then p.b = tonumber(A['b:' .. id]) or 0 end
    if k ~= 'B' then
      p.r = tonumber(A['r:' .. id])
      local o = A['o:' .. id]
      if o then p.o = o + 0 end
    end
    if k == 'A' then
      p.amount = ARGV[j + 3] + 0
    elseif k == 'O' or k == 'P' then
      p.s = tonumber(A['s:' .. id]) or 0
      p.c = tonumber(A['c:' .. id]) or ARGV[j + 7] + 0
      if k == 'O' then p.bs, p.bp = ARGV[j + 5] + 0, ARGV[j + 6] + 0 end
    end
  end
  POOLS[i + 1] = p
  BYID[id] = p
end

local function remaining(p)
  if p.kind == 'P' then
    if p.c < 0 then return -1 end
    return math.max(0, p.c - p.s)
  end
  return p.b
end

-- What an overage or pay-as-you-go pool may spend in a period: its cap, or without one MAX, so
-- that its spend, summed over the period's charges, stays exact.
local function spend_cap(p)
  return p.c >= 0 and p.c or MAX
end

-- Events, holds and idempotency records ---------------------------------------------------

local EV = {}
local CTX = {rid = '', act = '', q = '', at = ''}
-- What this call changed besides account fields, carried by its last event so that the ledger
-- can rebuild Redis exactly: holds (id -> packed hold, false when gone) and idempotency records
-- (key -> {packed record, TTL ms or -1 to keep the previous expiry}).
local SNAP_H, SNAP_R = {}, {}
local SNAPPED = false
local FLUSHED = false

local function set_record(key, value, ttl)
  if ttl then redis.call('SET', key, value, 'PX', ttl)
  else redis.call('SET', key, value, 'KEEPTTL') end
  SNAP_R[key] = {value, tonumber(ttl) or -1}
  SNAPPED = true
end

local function set_hold(id, value, exp)
  if value then
    redis.call('HSET', KEYS[3], id, value)
    redis.call('ZADD', KEYS[4], exp, id)
  else
    redis.call('HDEL', KEYS[3], id)
    redis.call('ZREM', KEYS[4], id)
  end
  SNAP_H[id] = value or false
  SNAPPED = true
end

-- A move is 'pool,delta,balance_after[,lot]' in the pool's unit.
local function mv(p, delta, lot)
  local s = p.id .. ',' .. fmt(delta) .. ',' .. fmt(remaining(p))
  if lot then s = s .. ',' .. lot end
  return s
end

-- An event: its kind, moves, extra fields, and request id (nil: the call's, with its action).
local function emit(kind, moves, extra, rid)
  EV[#EV + 1] = {kind, moves, extra, rid}
end

-- Writes what the call changed (pool state, account fields) and appends its events, the last
-- carrying the snapshot.
local function flush()
  for _, p in ipairs(POOLS) do
    if p.dirty then
      if p.kind == 'G' then put('L:' .. p.id, cmsgpack.pack(p.lots))
      elseif p.kind ~= 'P' then put('b:' .. p.id, p.b) end
      if p.o > 0 or A['o:' .. p.id] then put('o:' .. p.id, p.o > 0 and p.o or nil) end
      if p.r then put('r:' .. p.id, p.r) end
      if p.kind == 'O' or p.kind == 'P' then put('s:' .. p.id, p.s) end
      p.dirty = nil
    end
  end
  for id, p in pairs(BYID) do
    if p.ghost and p.dirty then
      if p.kind == 'G' then put('L:' .. id, cmsgpack.pack(p.lots)) else put('b:' .. id, p.b) end
      p.dirty = nil
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
    local f = {'v', '1', 'k', e[1], 'a', ACCT, 'r', e[4] or CTX.rid, 't', fmt(NOW),
      'm', table.concat(e[2], ';')}
    if e[4] == nil and CTX.act ~= '' then
      f[#f + 1] = 'act'; f[#f + 1] = CTX.act
      f[#f + 1] = 'q'; f[#f + 1] = CTX.q
      f[#f + 1] = 'at'; f[#f + 1] = CTX.at
    end
    if e[3] then for _, x in ipairs(e[3]) do f[#f + 1] = x end end
    if i == #EV and SNAPPED then
      f[#f + 1] = 'st'
      f[#f + 1] = cmsgpack.pack({a = snap_a, h = SNAP_H, r = SNAP_R})
    end
    redis.call('XADD', KEYS[2], '*', unpack(f))
  end
  FLUSHED = true
end

-- After a flush, starts the next write afresh: a batch makes several charges, each written and
-- announced on its own as a call of its own would.
local function afresh()
  if FLUSHED then EV, W, SNAP_H, SNAP_R, SNAPPED, FLUSHED = {}, {}, {}, {}, false, false end
end

-- Upkeep: period resets, expired lots and holds, the end of a stop -------------------------

local function lot_expired(l) return l[3] > 0 and l[3] <= NOW end

-- Whether pool `p` needs maintain() (general.lua) at NOW: a period that has ended or has not
-- started yet, a grant lot that has expired.
local function due(p)
  local k = p.kind
  if k == 'G' then
    for _, l in ipairs(p.lots) do
      if lot_expired(l) then return true end
    end
    return false
  end
  return k ~= 'B' and (p.r == nil or NOW >= p.r)
end

local function stop_ended()
  local stop = tonumber(A.stop) or 0
  return stop > 0 and NOW >= stop
end

local UP_TO_DATE = false  -- nothing is due at NOW (found so, or made so)
local DUE_HOLDS           -- the ids of the holds that expired by NOW, as quiet() read them

-- Whether nothing is due: the common case, in which a call needs nothing of general.lua.
local function quiet()
  if UP_TO_DATE then return true end
  if stop_ended() then return false end
  for _, p in ipairs(POOLS) do
    if due(p) then return false end
  end
  DUE_HOLDS = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', NOW)
  UP_TO_DATE = #DUE_HOLDS == 0
  return UP_TO_DATE
end

-- Brings the account up to date before anything else is decided: every hold past its expiry
-- gives its credits back, so no balance is understated and no charge is refused for credits
-- that are free again. FAST (the loader's first line) is false only where tests compare this
-- with always building general() and maintaining every pool.
local function maintain_all()
  if FAST and quiet() then return end
  general()
  if stop_ended() then
    put('stop', nil)
    emit('resume', {}, nil, '')
  end
  for _, p in ipairs(POOLS) do maintain(p) end
  expire_holds(DUE_HOLDS or redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', NOW))
  DUE_HOLDS, UP_TO_DATE = {}, true
end
