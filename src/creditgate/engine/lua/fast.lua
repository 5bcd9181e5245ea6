-- fast.lua: fast_charge(), the common allowed charge, and the reads made before it
-- (fast_account, fast_open, fast_now), shared by consume_fast.lua (one request) and
-- consume_batch.lua (several requests of one account and shape in one call). No KEYS or ARGV
-- of its own: those of the script it is part of (consume.lua's layout).
--
-- It answers a charge only when it is allowed and wholly covered by allowance and grant pools
-- while nothing is due: the caller has checked that the account exists on the caller's plan, is
-- neither suspended nor stopped, that no hold expires and that the request id is new; here no
-- period may reset and no grant lot may expire. Then it makes exactly the writes lib.lua +
-- consume.lua would make (the same account fields, idempotency record, event and reply;
-- tests/engine/test_consume_fast.py compares the paths write for write) without building the
-- prelude's tables and closures, which cost more than half of a consume call, and returns the
-- reply. Otherwise it returns nil having written nothing. What a charge is made of (the demand,
-- a debit, the record, the event) is core.lua's, which the general path uses too; what is left
-- here is the walk over the pools for this one case.
--
-- Numeric strings that are always there (ARGV, TIME, fields these scripts write) are converted
-- with `x + 0`, which parses them once; tonumber() parses twice (lua_isnumber, lua_tonumber).
--
-- The reads both callers make before fast_charge(). The account's fields, as a table:
local function fast_account()
  local raw = redis.call('HGETALL', KEYS[1])
  local A = {}
  for i = 1, #raw, 2 do A[raw[i]] = raw[i + 1] end
  return A
end

-- Whether fast_charge() may try this account on the caller's plan: neither suspended nor stopped.
local function fast_open(A)
  return A.plan == ARGV[2] and A.st ~= 'suspended' and A.stop == nil
end

-- TIME, and the instant in ms it gives (the account's frozen clock under test clocks, as
-- lib.lua's NOW); whether no hold expires by then.
local function fast_now(A)
  local t = redis.call('TIME')
  local now = t[1] * 1000 + math.floor(t[2] / 1000)
  if ARGV[3] == '1' and A.clk then now = tonumber(A.clk) end
  -- An account without holds has no expiry set. Arguments to redis.call as strings: a Lua
  -- number is printed with '%.14g' on the way.
  return t, now, redis.call('EXISTS', KEYS[4]) == 0
    or #redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', string.format('%d', now), 'LIMIT', '0', '1')
      == 0
end

-- A: the account's fields as read (updated here with what the charge writes, so a batch can
-- charge again from them); now: the instant in ms; np, a0: the pool count and the index of the
-- mode in ARGV (consume.lua's layout); rk, rid: the request's idempotency record key and id.
local function fast_charge(A, now, np, a0, rk, rid)
  local uc, per = ARGV[a0 + 4] + 0, ARGV[a0 + 5] + 0
  local D = demand(ARGV[a0 + 3] + 0, uc, per) or 0  -- too large: left to the general path
  -- Each pool's balance (a pay-as-you-go pool's remaining cap); the pools to take from.
  local bal, lots, takes, ends = {}, {}, {}, {}
  local rem = D
  local go = D > 0
  for i = 1, np do
    if not go then break end
    local j = -5 + i * 10
    local id, k = ARGV[j], ARGV[j + 1]
    local b = 0
    if k == 'A' or k == 'O' or k == 'P' then
      local r = A['r:' .. id]
      if r == nil then go = false; break end
      r = r + 0
      if now >= r or A['o:' .. id] then go = false; break end
      ends[i] = r
    end
    if k == 'G' then
      local packed = A['L:' .. id]
      local ls = packed and cmsgpack.unpack(packed) or {}
      for _, l in ipairs(ls) do
        if lot_expired(l, now) then go = false end
        b = b + l[2]
      end
      lots[i] = ls
    elseif k == 'P' then
      local c, spent = A['c:' .. id], A['s:' .. id]
      b = left(k, b, c and c + 0 or ARGV[j + 7] + 0, spent and spent + 0 or 0)
    else
      local x = A['b:' .. id]
      b = x and x + 0 or 0
    end
    bal[i] = b
    if rem > 0 and ARGV[j + 8] == '1' then
      if k ~= 'A' and k ~= 'G' then go = false; break end
      local take = math.min(b, rem)
      if take > 0 then takes[#takes + 1] = i; rem = rem - take end
    end
  end
  if not go or rem ~= 0 then return nil end
  do
    local fmt = string.format
    local out = {'OK', 1, 1, D, 0, now, 0, 0, 0, #takes}
    local debits, moves, fields, snap = {}, {}, {}, {}
    local none = {}  -- packed as an empty list wherever it appears
    rem = D
    for _, i in ipairs(takes) do
      local j = -5 + i * 10
      local id, k = ARGV[j], ARGV[j + 1]
      local amt = math.min(bal[i], rem)
      local rest = bal[i] - amt
      rem = rem - amt
      bal[i] = rest
      local rate = ARGV[j + 4] + 0
      local b = fmt('%d', rest)
      local d, kept = debit(id, k, amt, amt, b, lots[i], ends[i] or 0, rate, moves)
      debits[#debits + 1] = d
      if k == 'G' then
        local packed = cmsgpack.pack(kept)
        fields[#fields + 1] = 'L:' .. id
        fields[#fields + 1] = packed
        snap['L:' .. id] = packed
      else
        local r = A['r:' .. id]
        fields[#fields + 1] = 'b:' .. id
        fields[#fields + 1] = b
        fields[#fields + 1] = 'r:' .. id
        fields[#fields + 1] = r
        snap['b:' .. id], snap['r:' .. id] = b, r
      end
      out[#out + 1] = id
      out[#out + 1] = amt
      out[#out + 1] = rest
      out[#out + 1] = amt
    end
    for i = 1, np do out[#out + 1] = bal[i] end
    local records = {}
    write_record(records, rk, request_record(a0, 'C', out, debits, D, uc, per), ARGV[a0 + 9])
    redis.call('HSET', KEYS[1], unpack(fields))
    for f = 1, #fields, 2 do A[fields[f]] = fields[f + 1] end
    write_event('charge', rid, now, moves, 'act', ARGV[a0 + 6], 'q', ARGV[a0 + 3],
      'at', ARGV[a0 + 7], 'st', cmsgpack.pack({a = snap, h = none, r = records}))
    return out
  end
end
