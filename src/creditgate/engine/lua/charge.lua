-- charge.lua: the one charge. walk() plans how a demand is covered by the pools, in order;
-- take() works out what the takes leave and the debits, moves and fields they make; charge()
-- does both for a CheckAndConsume or Reserve and writes the result. Every charge goes through
-- them: consume.lua's first branch (the common case: nothing due), consume_batch.lua (several
-- charges of one account), and the general path (consume_general.lua after the lazy
-- maintenance of lib.lua + rules.lua; settle.lua for what a settle charges beyond its hold).
-- No KEYS or ARGV of its own: the pools are lib.lua's common ARGV, read where they lie.
--
-- Numeric strings that are always there (ARGV, TIME, fields these scripts write) are converted
-- with `x + 0`, which parses them once; tonumber() parses twice (lua_isnumber, lua_tonumber).
-- The pool at position i of the common ARGV starts at ARGV[i * 10 - 5].

-- The account's fields (`np` plan pools in the common ARGV), as a table, whether a charge may
-- be tried on it (it is on the caller's plan, neither suspended nor stopped, and no recurring
-- charge of its plan is due: recurring.lua's recurring(), 'rcd' the earliest due), and if so TIME,
-- the instant in ms it gives (the account's frozen clock under test clocks, as lib.lua's NOW)
-- and whether no hold expires by then.
local function open_account(np)
  local raw = redis.call('HGETALL', KEYS[1])
  local A = {}
  for i = 1, #raw, 2 do A[raw[i]] = raw[i + 1] end
  local pk = A.plan
  if A.tk and pk then pk = pk .. '#' .. A.tk end
  if pk ~= ARGV[2] or A.st == 'suspended' or A.stop ~= nil then return A, false end
  local t = redis.call('TIME')
  local now = t[1] * 1000 + math.floor(t[2] / 1000)
  if ARGV[3] == '1' and A.clk then now = A.clk + 0 end
  if ARGV[np * 10 + 5] ~= '' and (A.rcd == nil or now >= A.rcd + 0) then return A, false end
  -- An account without holds has no expiry set. Arguments to redis.call as strings: a Lua
  -- number is printed with '%.14g' on the way.
  return A, true, t, now, redis.call('EXISTS', KEYS[4]) == 0
    or #redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', string.format('%d', now), 'LIMIT', '0', '1')
      == 0
end

-- Plans, without changing anything, how `D` meter micro-units are covered at `now` by the
-- account's pools in plan order: those the caller's ARGV marks eligible at their ARGV rate, or,
-- with `el` (pool id -> rate), those `el` names at its rate (a settle's pools in scope at
-- Reserve time). Returns nil when a pool is due for maintenance (a period has ended or never
-- started, a grant lot has expired): lib.lua's general path brings it up to date first. Else:
--   T, the takes, flat, 6 per take: pool position, amount (the pool's unit), covered (meter
--     micro-units), overage blocks bought, rate, period mark (the pool's next reset, or 0);
--   rem, what is left uncovered; capped, whether a spend cap stopped it;
--   bal, each pool's remaining (core.lua's left()); lots, a grant pool's lots by position.
local function walk(A, now, D, np, el)
  local T, bal, lots = {}, {}, {}
  local rem, capped = D, false
  for i = 1, np do
    local j = i * 10 - 5
    local id, k = ARGV[j], ARGV[j + 1]
    local b, s, c, r = 0, 0, -1, 0
    if k ~= 'G' and k ~= 'B' then
      r = A['r:' .. id]
      if r == nil then return nil end
      r = r + 0
      if now >= r then return nil end
    end
    if k == 'G' then
      local packed = A['L:' .. id]
      local ls = packed and cmsgpack.unpack(packed) or {}
      for _, l in ipairs(ls) do
        if lot_expired(l, now) then return nil end
        b = b + l[2]
      end
      lots[i] = ls
    else
      local x
      if k ~= 'P' then
        x = A['b:' .. id]
        if x then b = x + 0 end
      end
      if k == 'O' or k == 'P' then
        x = A['s:' .. id]
        if x then s = x + 0 end
        x = A['c:' .. id]
        c = x and x + 0 or ARGV[j + 7] + 0
      end
    end
    bal[i] = left(k, b, c, s)
    local rate
    if el then rate = el[id]
    elseif ARGV[j + 8] == '1' then rate = ARGV[j + 4] end
    if rate and rem > 0 then
      local x = #T
      if k == 'A' or k == 'G' then
        local t = math.min(b, rem)
        if t > 0 then
          T[x + 1], T[x + 2], T[x + 3], T[x + 4], T[x + 5], T[x + 6] = i, t, t, 0, rate + 0, r
          rem = rem - t
        end
      else
        rate = rate + 0
        local e = A['e:' .. id]
        if e == nil then e = ARGV[j + 9] end
        local en = e == '1'
        -- What an overage or pay-as-you-go pool may spend in its period: its cap, or without
        -- one MAX, so that its spend, summed over the period's charges, stays exact.
        local room = (c >= 0 and c or MAX) - s
        if k == 'O' then
          local t, blocks = math.min(b, rem), 0
          if rem > t and en then
            local n = ceil_div(rem - t, ARGV[j + 5] + 0)
            if n * ARGV[j + 6] > room then capped = true
            else blocks = n; t = rem end
          end
          if t > 0 then
            T[x + 1], T[x + 2], T[x + 3], T[x + 4], T[x + 5], T[x + 6] = i, t, t, blocks, rate, r
            rem = rem - t
          end
        else
          local avail = b
          if k == 'P' then
            avail = 0
            if en and A.st ~= 'trial' then avail = math.max(0, room) end
          end
          -- Exact while it is at most MAX; beyond that only compared with avail <= MAX.
          local need = money_ceil(rem, rate)
          if avail >= need then
            T[x + 1], T[x + 2], T[x + 3], T[x + 4], T[x + 5], T[x + 6] = i, need, rem, 0, rate, r
            rem = 0
          else
            local cov = meter_floor(avail, rate)
            if cov > 0 then
              T[x + 1], T[x + 2], T[x + 3], T[x + 4], T[x + 5], T[x + 6] =
                i, money_ceil(cov, rate), cov, 0, rate, r
              rem = rem - cov
            end
            if k == 'P' and en and A.st ~= 'trial' then capped = true end
          end
        end
      end
    end
  end
  return T, rem, capped, bal, lots
end

-- What a charge's take from balance pool `j` (its ARGV position) crosses, from `before` to
-- `after` money micro-units, at `now`, for request `rid` (nothing with `denied`: a denial by
-- this pool, which only starts an auto top-up). Appends to `pre` (rows {kind, request id, moves,
-- extra}) a 'notice' per crossing, once each time the balance falls to the low-balance
-- threshold (the auto top-up threshold while auto top-up is on, else the plan's default, in the
-- block-size slot) and to zero; and, with auto top-up on ('au:<pool>' = threshold,amount,monthly
-- max) and at or below its threshold, a 'topup' event when none is in flight or paused
-- ('tu:<pool>': absent, or 'max:<ms>' with ms passed), marking it in flight in `fields`. The
-- script is atomic, so one top-up is in flight however many charges cross at once.
local function crossed(A, j, before, after, now, rid, fields, pre, denied)
  local fmt, id = string.format, ARGV[j]
  local au, th = A['au:' .. id], ARGV[j + 5] + 0
  local amt
  if au then
    local c = string.find(au, ',', 1, true)
    th = string.sub(au, 1, c - 1) + 0
    amt = string.match(au, '^[^,]*,([^,]*)')
  end
  if not denied then
    if th > 0 and before > th and after <= th then
      pre[#pre + 1] = {'notice', rid, {}, {'n', 'credit_balance_low', 'pool', id,
        'bal', fmt('%d', after), 'th', fmt('%d', th)}}
    end
    if before > 0 and after == 0 then
      pre[#pre + 1] = {'notice', rid, {}, {'n', 'credit_balance_depleted', 'pool', id,
        'bal', '0'}}
    end
  end
  if au and (after <= th or denied) then
    local tu = A['tu:' .. id]
    if tu == nil or (string.sub(tu, 1, 4) == 'max:' and now >= string.sub(tu, 5) + 0) then
      -- The top-up id is unique across accounts and time: the account's id and its count of
      -- top-ups ('tn'), with the time in front for people.
      local n = fmt('%d', (A.tn or 0) + 1)
      A.tn = n
      local tid = 'tu_' .. fmt('%d', now) .. '_'
        .. string.sub(redis.sha1hex(ARGV[1] .. '|' .. n), 1, 16)
      fields[#fields + 1] = 'tn'; fields[#fields + 1] = n
      fields[#fields + 1] = 'tu:' .. id; fields[#fields + 1] = 'run:' .. tid
      pre[#pre + 1] = {'topup', tid, {}, {'pool', id, 'amount', amt, 'th', fmt('%d', th),
        'bal', fmt('%d', after)}}
    end
  end
end

-- Whether an overage or pay-as-you-go pool (ARGV position `j`, cap `c`) that spent `spent` in
-- the period marked `r` has reached its cap (it can buy no further block, or spend nothing
-- more) for the first time in that period: then appends a 'spend_cap_reached' notice to `pre`
-- and the field that marks the period ('cr:<pool>') to `fields`. With `denied`, a charge this
-- cap refused: reached whatever the room left.
local function cap_reached(A, j, c, spent, r, rid, fields, pre, denied)
  local id = ARGV[j]
  local room = c - spent
  if c < 0 or (not denied and room >= (ARGV[j + 1] == 'O' and ARGV[j + 6] + 0 or 1)) then
    return
  end
  local mark = string.format('%d', r)
  if A['cr:' .. id] == mark then return end
  fields[#fields + 1] = 'cr:' .. id; fields[#fields + 1] = mark
  pre[#pre + 1] = {'notice', rid, {}, {'n', 'spend_cap_reached', 'pool', id,
    'bal', string.format('%d', math.max(0, room)), 'th', string.format('%d', c)}}
end

-- Works out walk()'s takes `T` (with its bal and lots, which it updates to what the takes
-- leave) and appends to `out` the reply's rows: n, then n x (pool, amount, remaining, covered),
-- then each pool's remaining. With `dry`, that is all. Otherwise it also returns the debits
-- ({pool, kind, amount, covered, period mark, rate, lots taken}, which returns and refunds give
-- back), the moves, the account fields to write (flat: name, value) and the events to write
-- before the charge's own (nil if none), each {kind, request id, moves, extra fields}: the
-- overage blocks bought, and what the takes crossed at `now` for request `rid` (crossed(),
-- cap_reached()).
local function take(A, T, bal, lots, dry, out, now, rid)
  local fmt = string.format
  local debits, moves, fields, pre = {}, {}, {}, nil
  out[#out + 1] = #T / 6
  for x = 1, #T, 6 do
    local i, amt, cov, nb = T[x], T[x + 1], T[x + 2], T[x + 3]
    local j = i * 10 - 5
    local id, k = ARGV[j], ARGV[j + 1]
    local rest, spent = bal[i], 0
    local before = rest
    if k == 'O' or k == 'P' then
      spent = A['s:' .. id]
      spent = spent and spent + 0 or 0
    end
    if nb > 0 then
      local credits, price = nb * ARGV[j + 5], nb * ARGV[j + 6]
      rest = rest + credits
      spent = spent + price
      pre = pre or {}
      pre[#pre + 1] = {'overage_block', rid, {move(id, credits, fmt('%d', rest))},
        {'price', fmt('%d', price), 'blocks', fmt('%d', nb)}}
    end
    local c
    if k == 'P' then
      spent = spent + amt
      c = A['c:' .. id]
      c = c and c + 0 or ARGV[j + 7] + 0
      rest = left(k, 0, c, spent)
    else
      rest = rest - amt
    end
    bal[i] = rest
    out[#out + 1] = id; out[#out + 1] = amt; out[#out + 1] = rest; out[#out + 1] = cov
    if not dry then
      local after = fmt('%d', rest)
      -- The debit: {pool, kind, amount, covered, period mark, rate, lots taken as {id, amount,
      -- expires}}. A grant pool takes from its lots soonest-expiring first (their stored order)
      -- and drops the lots it empties.
      local taken = {}
      debits[#debits + 1] = {id, k, amt, cov, T[x + 5], T[x + 4], taken}
      local n = #fields
      if k == 'G' then
        local kept, need = {}, amt
        for _, l in ipairs(lots[i]) do
          if need > 0 and l[2] > 0 then
            local t = math.min(need, l[2])
            l[2] = l[2] - t
            need = need - t
            taken[#taken + 1] = {l[1], t, l[3]}
            moves[#moves + 1] = move(id, -t, after, l[1])
          end
          if l[2] > 0 then kept[#kept + 1] = l end
        end
        fields[n + 1] = 'L:' .. id; fields[n + 2] = cmsgpack.pack(kept)
      else
        moves[#moves + 1] = move(id, -amt, after)
        if k ~= 'P' then fields[n + 1] = 'b:' .. id; fields[n + 2] = after; n = n + 2 end
        if k == 'O' or k == 'P' then fields[n + 1] = 's:' .. id; fields[n + 2] = fmt('%d', spent) end
        if k == 'B' then
          pre = pre or {}
          crossed(A, j, before, rest, now, rid, fields, pre)
        elseif k == 'P' or nb > 0 then
          if k == 'O' then c = A['c:' .. id]; c = c and c + 0 or ARGV[j + 7] + 0 end
          pre = pre or {}
          cap_reached(A, j, c, spent, T[x + 5], rid, fields, pre)
        end
      end
    end
  end
  for i = 1, #bal do out[#out + 1] = bal[i] end
  return debits, moves, fields, pre
end

-- A CheckAndConsume (mode 'C') or Reserve ('R') at `now` from account fields `A` (updated with
-- what it writes, so a batch can charge again from them), as consume.lua's ARGV from `a0`
-- describes it, under idempotency record `rk` and request id `rid`. When the charge is allowed
-- it writes it (the account fields, the hold, the record and the events; a dry run nothing) and
-- returns consume.lua's reply. When it is not, or something is due (walk()), or the demand is
-- too large, it returns nil, what is left uncovered and whether a cap stopped it, having written
-- nothing.
local function charge(A, now, np, a0, rk, rid)
  local uc, per = ARGV[a0 + 4] + 0, ARGV[a0 + 5] + 0
  local D = demand(ARGV[a0 + 3] + 0, uc, per)
  if D == nil then return nil end
  local T, rem, capped, bal, lots = walk(A, now, D, np, nil)
  if T == nil or rem > 0 then return nil, rem, capped end
  local mode, dry = ARGV[a0], ARGV[a0 + 8] == '1'
  local exp = 0
  if mode == 'R' and not dry then exp = now + ARGV[a0 + 10] end
  local out = {'OK', 1, 1, D, 0, now, 0, 0, exp}
  local debits, moves, fields, pre = take(A, T, bal, lots, dry, out, now, rid)
  if dry then return out end
  local snap, holds, records = {}, {}, {}
  if #fields > 0 then
    redis.call('HSET', KEYS[1], unpack(fields))
    for f = 1, #fields, 2 do
      A[fields[f]] = fields[f + 1]
      snap[fields[f]] = fields[f + 1]
    end
  end
  local act, q, at = ARGV[a0 + 6], ARGV[a0 + 3], ARGV[a0 + 7]
  if pre then
    for _, e in ipairs(pre) do
      if e[1] == 'overage_block' then
        write_event(e[1], e[2], now, e[3], 'act', act, 'q', q, 'at', at, unpack(e[4]))
      else
        write_event(e[1], e[2], now, e[3], unpack(e[4]))
      end
    end
  end
  -- The request's idempotency record: its fingerprint, mode, meter, the plan it was priced with
  -- and its first reply; a charge also its debits, cover (meter micro-units), unit cost `uc` per
  -- `per` units and what was refunded of it (0); a reservation its state, 'held', and its hold:
  -- the debits, cover, pricing, expiry, and the pools it may settle beyond its hold from, as
  -- {id, rate}.
  local fp, mt, pl = ARGV[a0 + 2], ARGV[a0 + 11], ARGV[2]
  if mode == 'R' then
    write_record(records, rk, cmsgpack.pack({fp = fp, m = mode, mt = mt, pl = pl, st = 'held',
      rep = out}), ARGV[a0 + 9])
    local el = {}
    for i = 1, np do
      local j = i * 10 - 5
      if ARGV[j + 8] == '1' then el[#el + 1] = {ARGV[j], ARGV[j + 4] + 0} end
    end
    write_hold(holds, rid, cmsgpack.pack({d = debits, cov = D, uc = uc, per = per, el = el,
      exp = exp, mt = mt}), exp)
    write_event('hold', rid, now, moves, 'act', act, 'q', q, 'at', at,
      'expires', string.format('%d', exp), 'st', cmsgpack.pack({a = snap, h = holds, r = records}))
  else
    write_record(records, rk, cmsgpack.pack({fp = fp, m = mode, mt = mt, pl = pl, d = debits,
      cov = D, uc = uc, per = per, ref = 0, rep = out}), ARGV[a0 + 9])
    write_event('charge', rid, now, moves, 'act', act, 'q', q, 'at', at,
      'st', cmsgpack.pack({a = snap, h = holds, r = records}))
  end
  return out
end
