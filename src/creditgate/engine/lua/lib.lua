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
-- Cost: Redis runs the whole text on every call, and every function in it is made anew each
-- time: about 0.6k instructions each, plus about 0.6k for each local it is the first to
-- capture (bench/script_cost.py measures). So the prelude does at top level what every call
-- needs (reading the account, its pools, what is due) and holds only the functions a charge
-- uses; the rest (period resets, expiries, returns, the retry time of a denial) is made by
-- general() (general.lua) into G when a call first needs it.

local MICRO = 1000000
local MAX = 4503599627370495
local DAY = 86400000
-- Reasons (proto Reason numbers).
local R_ALLOWED, R_INSUFFICIENT, R_CAP, R_SUSPENDED, R_STOPPED, R_NOT_ENTITLED = 1, 2, 3, 4, 5, 6

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

-- Meter micro-units for `q` units at `uc` micro-units per `per` units, rounded up; nil when the
-- product is too large to be exact.
local function demand(q, uc, per)
  local prod = q * uc
  if prod > MAX then return nil end
  return ceil_div(prod, per)
end

-- The general path's functions, made by general() (general.lua) on first use.
local G = {}
local general

-- Account state ---------------------------------------------------------------------------

local ACCT = ARGV[1]
local A = {}  -- the account's fields
do
  local raw = redis.call('HGETALL', KEYS[1])
  for i = 1, #raw, 2 do A[raw[i]] = raw[i + 1] end
end
local EXISTS = A.plan ~= nil
-- NO_ACCOUNT or PLAN (the caller priced with another plan), as a script answers them.
local PLAN_ERR = (not EXISTS and {'NO_ACCOUNT'}) or (A.plan ~= ARGV[2] and {'PLAN', A.plan})
  or nil
local NOW
do
  local t = redis.call('TIME')
  NOW = t[1] * 1000 + math.floor(t[2] / 1000)
  -- A test clock is frozen per account (like Stripe's test clocks): it moves only when advanced.
  if ARGV[3] == '1' and A.clk then NOW = tonumber(A.clk) end
end
local ANCHOR = tonumber(A.anc) or 1  -- the account's cycle day
local W = {}  -- account fields to write back
local function put(f, v) A[f] = v; W[f] = true end

-- Pools -----------------------------------------------------------------------------------

local POOLS = {}
local BYID  -- pools by id, ghosts included (general.lua)
local NP = ARGV[4] + 0
local ARG0 = 5 + NP * 10  -- first script-specific ARGV

local function lot_expired(l) return l[3] > 0 and l[3] <= NOW end

-- A grant pool's lots, {id, amount, expires ms (0: never)} soonest-expiring first, and their sum.
local function load_lots(p)
  local raw = A['L:' .. p.id]
  p.lots = raw and cmsgpack.unpack(raw) or {}
  local b = 0
  for _, l in ipairs(p.lots) do b = b + l[2] end
  p.b = b
end

-- Each pool holds only what its kind uses (building a table costs per field): A allowance
-- {b, r, o}, G grant {b, lots}, B money balance {b}, O overage {b, r, o, s, c, bs, bp}, P payg
-- {r, o, s, c}; every pool its id, kind, j (its first ARGV) and en (enabled). b is the balance,
-- r the next reset (nil until the first period starts), o an allowance's debt (this period's
-- use beyond its amount after a plan change to a smaller allowance; returns pay it off first,
-- the next reset clears it), s the period's spend, c the cap (-1: none). What never changes
-- during a call (period, amount, rate, eligibility) is read from ARGV where it is used. `due`
-- tells whether maintain() (general.lua) has something to do: a period that has ended or has
-- not started, a grant lot that has expired.
local ANY_DUE = false
for i = 0, NP - 1 do
  local j = 5 + i * 10
  local id, k = ARGV[j], ARGV[j + 1]
  local e = A['e:' .. id]
  if e == nil then e = ARGV[j + 9] end
  local p
  if k == 'G' then
    p = {id = id, kind = k, j = j, en = e == '1', b = 0, lots = false, o = 0}
    load_lots(p)
    for _, l in ipairs(p.lots) do
      if lot_expired(l) then p.due = true end
    end
  elseif k == 'B' then
    local b = A['b:' .. id]
    p = {id = id, kind = k, j = j, en = e == '1', b = b and b + 0 or 0, o = 0}
  else
    local r, o = A['r:' .. id], A['o:' .. id]
    r, o = r and r + 0, o and o + 0 or 0
    if k == 'A' then
      local b = A['b:' .. id]
      p = {id = id, kind = k, j = j, en = e == '1', b = b and b + 0 or 0, r = r, o = o}
    else
      local s, c = A['s:' .. id], A['c:' .. id]
      p = {id = id, kind = k, j = j, en = e == '1', b = 0, r = r, o = o, s = s and s + 0 or 0,
        c = c and c + 0 or ARGV[j + 7] + 0}
      if k == 'O' then
        local b = A['b:' .. id]
        p.b, p.bs, p.bp = b and b + 0 or 0, ARGV[j + 5] + 0, ARGV[j + 6] + 0
      end
    end
  end
  if k ~= 'G' and k ~= 'B' and (p.r == nil or NOW >= p.r) then p.due = true end
  ANY_DUE = ANY_DUE or p.due
  POOLS[i + 1] = p
end

local function remaining(p)
  if p.kind == 'P' then
    if p.c < 0 then return -1 end
    return math.max(0, p.c - p.s)
  end
  return p.b
end

-- What is due at NOW, and account-level refusals -------------------------------------------

local STOP = tonumber(A.stop) or 0  -- a stop's end (ms), 0 when none
local STOP_ENDED = STOP > 0 and NOW >= STOP
-- The holds past their expiry (false: none); an account without holds has no expiry set.
local DUE_HOLDS = redis.call('EXISTS', KEYS[4]) == 1
  and redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', NOW)
if DUE_HOLDS and #DUE_HOLDS == 0 then DUE_HOLDS = false end
-- Nothing is due: the common case, in which a call never needs general.lua.
local QUIET = not (ANY_DUE or STOP_ENDED or DUE_HOLDS)
-- An account-level refusal, checked before any pool, and when it ends by itself.
local BLOCK, BLOCK_UNTIL
if A.st == 'suspended' then BLOCK, BLOCK_UNTIL = R_SUSPENDED, 0
elseif STOP > NOW then BLOCK, BLOCK_UNTIL = R_STOPPED, STOP end

-- Events, holds and idempotency records ---------------------------------------------------

local EV = {}
local CTX = {rid = '', act = '', q = '', at = ''}
-- What this call changed besides account fields, carried by its last event so that the ledger
-- can rebuild Redis exactly: holds (id -> packed hold, false when gone) and idempotency records
-- (key -> {packed record, TTL ms or -1 to keep the previous expiry}).
local SNAP_H, SNAP_R = {}, {}
local SNAPPED = false
local FLUSHED = false  -- written once already: a batch's next charge starts afresh (charge.lua)
local DIRTY = {}  -- the pools this call changed, in the order it first changed them

local function touch(p)
  if not p.dirty then
    p.dirty = true
    DIRTY[#DIRTY + 1] = p
  end
end

local function set_record(key, value, ttl)
  if ttl then redis.call('SET', key, value, 'PX', ttl)
  else redis.call('SET', key, value, 'KEEPTTL') end
  SNAP_R[key] = {value, tonumber(ttl) or -1}
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
  for _, p in ipairs(DIRTY) do
    local id = p.id
    if p.kind == 'G' then put('L:' .. id, cmsgpack.pack(p.lots))
    elseif p.kind ~= 'P' or p.ghost then put('b:' .. id, p.b) end
    if not p.ghost then
      if p.o > 0 or A['o:' .. id] then put('o:' .. id, p.o > 0 and p.o or nil) end
      if p.r then put('r:' .. id, p.r) end
      if p.kind == 'O' or p.kind == 'P' then put('s:' .. id, p.s) end
    end
    p.dirty = false
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

-- Brings the account up to date before anything else is decided (general.lua's upkeep):
-- every hold past its expiry gives its credits back, so no balance is understated and no
-- charge is refused for credits that are free again. Nothing to do in the common case. FAST
-- (the loader's first line) is false only where tests compare this with always building
-- general() and running upkeep.
local function maintain_all()
  if QUIET and FAST then return end
  general()
  G.upkeep()
end
