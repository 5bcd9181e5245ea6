-- core.lua: what a charge is made of, written once and used by both ways a charge is made:
-- fast.lua's fast_charge() (the common allowed charge, made before lib.lua's prelude is built)
-- and lib.lua's general path. The loader puts it first in every script (engine/scripts.py).
--
-- It holds the integer arithmetic and the demand, the lot-expiry rule and what a pool has
-- left, the format of a move, a debit (taking from a pool or its grant lots), writing an
-- idempotency record, and writing an event to the shard's stream (the one writer of the
-- stream's format; events/schema.py owns it). Every function here is made anew on every
-- call (Redis runs the script's whole text each time), so only these few are shared with the
-- common charge; see bench/script_cost.py for what each costs.

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

-- Takes `amt` meter micro-units' worth (`cov` of the charge) from pool `id` of kind `kind`,
-- whose remaining is `after` once taken (formatted). A grant pool takes it from its `lots`
-- ({id, amount, expires ms}), soonest-expiring first (their stored order), and drops the lots
-- it empties. Appends the moves to `moves`; returns the debit, {pool, kind, amount, covered,
-- period mark `mark`, rate, lots taken as {id, amount, expires}}, which returns and refunds give
-- back, and a grant pool's lots kept.
local function debit(id, kind, amt, cov, after, lots, mark, rate, moves)
  if kind ~= 'G' then
    moves[#moves + 1] = move(id, -amt, after)
    return {id, kind, amt, cov, mark, rate, {}}
  end
  local taken, kept, need = {}, {}, amt
  for _, l in ipairs(lots) do
    if need > 0 and l[2] > 0 then
      local t = math.min(need, l[2])
      l[2] = l[2] - t
      need = need - t
      taken[#taken + 1] = {l[1], t, l[3]}
      moves[#moves + 1] = move(id, -t, after, l[1])
    end
    if l[2] > 0 then kept[#kept + 1] = l end
  end
  return {id, kind, amt, cov, mark, rate, taken}, kept
end

-- The idempotency record of a CheckAndConsume ('C') or Reserve ('R') request (consume.lua's
-- ARGV from `a0`), packed: its fingerprint, mode, meter, the plan it was priced with and its
-- first reply `rep`; a charge also its debits, cover `cov` (meter micro-units), unit cost `uc`
-- per `per` units and what was refunded of it (0); a reservation its state, 'held'.
local function request_record(a0, mode, rep, debits, cov, uc, per)
  if mode == 'R' then
    return cmsgpack.pack({fp = ARGV[a0 + 2], m = mode, mt = ARGV[a0 + 11], pl = ARGV[2],
      st = 'held', rep = rep})
  end
  return cmsgpack.pack({fp = ARGV[a0 + 2], m = mode, mt = ARGV[a0 + 11], pl = ARGV[2],
    d = debits, cov = cov, uc = uc, per = per, ref = 0, rep = rep})
end

-- Writes an idempotency record (`ttl` ms, or nil to keep the key's expiry) and notes it in
-- `snap`, the state snapshot's records: key -> {packed record, TTL ms or -1}.
local function write_record(snap, key, value, ttl)
  if ttl then redis.call('SET', key, value, 'PX', ttl)
  else redis.call('SET', key, value, 'KEEPTTL') end
  snap[key] = {value, ttl and ttl + 0 or -1}
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
