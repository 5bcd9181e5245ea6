-- core.lua: the pieces both charge.lua and lib.lua + rules.lua use. The loader puts it first in
-- every script (engine/scripts.py).
--
-- It holds the integer arithmetic and the demand, the lot-expiry rule and what a pool has
-- left, the format of a move, writing an idempotency record or a hold, and writing an event to
-- the shard's stream (the one writer of the stream's format; events/schema.py owns it). Every
-- function here is made anew on every call, before consume's first branch answers (Redis runs
-- the script's whole text each time), and each costs about 1,200 instructions to make
-- (bench/script_cost.py), so only what that branch needs is here; what only the general path
-- needs is in lib.lua and rules.lua, which the first branch never reaches.

local MAX = 4503599627370495  -- 2^52 - 1: inputs stay below it so that products stay exact

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

local MICRO = 1000000

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

-- Whether grant lot `l` ({id, amount, expires ms (0: never)}) has expired at `now`.
local function lot_expired(l, now) return l[3] > 0 and l[3] <= now end

-- What a pool has left to give, in its unit: a pay-as-you-go pool its cap `c` less its spend `s`
-- (-1 without a cap), any other its balance `b`.
local function left(kind, b, c, s)
  if kind == 'P' then
    if c < 0 then return -1 end
    return math.max(0, c - s)
  end
  return b
end

-- A move: 'pool,delta,balance_after[,lot]' in the pool's unit (`after` formatted already).
local function move(id, delta, after, lot)
  local s = id .. ',' .. string.format('%d', delta) .. ',' .. after
  if lot then s = s .. ',' .. lot end
  return s
end

-- Writes an idempotency record (`ttl` ms, or nil to keep the key's expiry) and notes it in
-- `snap`, the state snapshot's records: key -> {packed record, TTL ms or -1}.
local function write_record(snap, key, value, ttl)
  if ttl then redis.call('SET', key, value, 'PX', ttl)
  else redis.call('SET', key, value, 'KEEPTTL') end
  snap[key] = {value, ttl and ttl + 0 or -1}
end

-- Writes a hold (`value`, packed; expiring at `exp` ms) or, with value nil, drops it, and
-- notes it in `snap`, the state snapshot's holds: id -> packed hold, or false when gone.
local function write_hold(snap, id, value, exp)
  if value then
    redis.call('HSET', KEYS[3], id, value)
    redis.call('ZADD', KEYS[4], exp, id)
  else
    redis.call('HDEL', KEYS[3], id)
    redis.call('ZREM', KEYS[4], id)
  end
  snap[id] = value or false
end

-- Appends an event to the shard's stream (KEYS[2]): format version '1', kind, account, request
-- id, time ms and moves joined by ';', then `...`, the event's further fields in this order:
-- 'act', 'q', 'at' (the request's action, quantity and attributes) when it is the request's own
-- event, the kind's extra fields, and 'st' with the packed state snapshot on the call's last
-- event. events/schema.py owns their format. (Passed as arguments, not built into a table: the common
-- charge writes one event per call and a table would cost it about 1% more.)
local function write_event(kind, rid, now, moves, ...)
  redis.call('XADD', KEYS[2], '*', 'v', EV_VERSION, 'k', kind, 'a', ARGV[1], 'r', rid,
    't', string.format('%d', now), 'm', table.concat(moves, ';'), ...)
end
