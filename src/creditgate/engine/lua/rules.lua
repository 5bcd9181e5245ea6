-- rules.lua: the general path's rules, right after lib.lua in every script that has it (lib,
-- rules and recurring.lua are one prelude, split only for their length): lazy maintenance of a
-- pool (period resets, expired lots) and of holds, giving credits back, what a refused charge
-- starts, and when a denial ends. recurring.lua's maintain_all() runs the maintenance. The
-- charge itself is charge.lua's. Uses lib.lua's account state, pools and events, and core.lua's
-- pieces.

-- Lazy maintenance: period resets, expired lots, the end of a stop ----------------------

local function maintain(p)
  local k = p.kind
  if k == 'A' or k == 'O' or k == 'P' then
    if p.r == nil then
      p.r = next_reset(p.period, NOW, ANCHOR)
      p.dirty = true
      if k == 'A' then
        p.b = p.amount
        p.fresh = true
        emit('reset', {mv(p, p.amount)}, nil, '')
      elseif k == 'P' then
        emit('reset', {mv(p, 0)}, {'spent', '0'}, '')
      end
    elseif NOW >= p.r then
      local spent = p.s
      p.dirty = true
      if k ~= 'P' and p.b > 0 then
        local left = p.b
        p.b = 0
        emit('expire', {mv(p, -left)}, nil, '')
      end
      p.r = next_reset(p.period, NOW, ANCHOR)
      p.s = 0
      p.o = 0
      if k == 'A' then
        p.b = p.amount
        p.fresh = true
        emit('reset', {mv(p, p.amount)}, nil, '')
      else
        emit('reset', {mv(p, 0)}, {'spent', fmt(spent)}, '')
      end
    end
  elseif k == 'G' then
    local due = false
    for _, l in ipairs(p.lots) do
      if lot_expired(l, NOW) then due = true; break end
    end
    if not due then return end
    local kept = {}
    for _, l in ipairs(p.lots) do
      if lot_expired(l, NOW) then
        p.b = p.b - l[2]
        p.dirty = true
        emit('expire', {mv(p, -l[2], l[1])}, nil, '')
      else
        kept[#kept + 1] = l
      end
    end
    p.lots = kept
  end
end

-- Grant lots are used soonest-expiring first; lots that never expire go last.
local function sort_lots(lots)
  table.sort(lots, function(a, b)
    local ea = a[3] == 0 and MAX or a[3]
    local eb = b[3] == 0 and MAX or b[3]
    if ea == eb then return a[1] < b[1] end
    return ea < eb
  end)
end

-- Give `R` meter micro-units back to the pools a charge or hold took them from, newest first.
-- Mutates `debits` (each {pool, kind, amount, covered, period mark, rate, lots}) so that later
-- partial returns see what is left. A return to a period that has ended, or to an expired lot,
-- is recorded and expires at once. Returns the moves, per-pool returns and the total returned.
local function give_back(debits, R)
  local moves, rets, total = {}, {}, 0
  local expired = {}
  for i = #debits, 1, -1 do
    if R <= 0 then break end
    local d = debits[i]
    if d[4] > 0 then
      local c = math.min(R, d[4])
      local amt
      if c == d[4] then amt = d[3]
      elseif d[2] == 'B' or d[2] == 'P' then amt = money_floor(c, d[6])
      else amt = c end
      d[3] = d[3] - amt
      d[4] = d[4] - c
      R = R - c
      total = total + c
      local p = BYID[d[1]] or ghost(d[1], d[2])
      p.dirty = true
      local k = d[2]
      if k == 'G' then
        local left = amt
        for li = #d[7], 1, -1 do
          local dl = d[7][li]
          if left <= 0 then break end
          local la = math.min(left, dl[2])
          dl[2] = dl[2] - la
          left = left - la
          if la == 0 then
            -- nothing of this lot to give back
          elseif dl[3] == 0 or dl[3] > NOW then
            local found = nil
            for _, l in ipairs(p.lots) do if l[1] == dl[1] then found = l end end
            if found then found[2] = found[2] + la
            else
              p.lots[#p.lots + 1] = {dl[1], la, dl[3]}
              sort_lots(p.lots)
            end
            p.b = p.b + la
            moves[#moves + 1] = mv(p, la, dl[1])
          else
            expired[#expired + 1] = {p, la, dl[1]}
          end
        end
      elseif k == 'B' or (not p.ghost and p.r ~= nil and p.r == d[5]) then
        if k == 'P' then p.s = p.s - amt
        else
          local paid = math.min(p.o, amt)
          p.o = p.o - paid
          p.b = p.b + amt - paid
        end
        moves[#moves + 1] = mv(p, amt)
      elseif k == 'P' then
        -- Pay-as-you-go money billed in an earlier period: owed back by billing, not re-capped.
        emit('billing_credit', {p.id .. ',' .. fmt(amt) .. ',' .. fmt(remaining(p))},
          {'period', fmt(d[5])})
      else
        expired[#expired + 1] = {p, amt}
      end
      rets[#rets + 1] = {p.id, -amt, remaining(p), -c}
    end
  end
  return moves, rets, total, expired
end

-- Returned credits that land after their period or lot ended expire straight away; called
-- after the event that gave them back so the ledger sees both movements in order.
local function expire_returns(expired)
  for _, x in ipairs(expired) do
    local p = x[1]
    emit('expire', {p.id .. ',' .. fmt(x[2]) .. ',' .. fmt(remaining(p) + x[2]) ..
      (x[3] and (',' .. x[3]) or ''), mv(p, -x[2], x[3])}, {'late_return', '1'}, '')
  end
end

-- Every hold past its expiry gives its credits back before anything else is decided, so no
-- balance is understated and no charge is refused for credits that are free again.
local function expire_holds()
  if PRE_NO_DUE_HOLDS then return end  -- the fast path looked at this NOW
  local ids = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', NOW)
  for _, hid in ipairs(ids) do
    local raw = redis.call('HGET', KEYS[3], hid)
    if raw then
      local h = cmsgpack.unpack(raw)
      local moves, _, _, expired = give_back(h.d, h.cov)
      emit('hold_expired', moves, nil, hid)
      expire_returns(expired)
    end
    set_hold(hid, nil)
  end
end

-- What a charge refused for lack of money or by a cap writes (only what it starts): an auto
-- top-up of a balance pool in scope (charge.lua's crossed()), and the spend cap reached by the
-- pools in scope that have one, once per period (cap_reached()). In scope: eligible for the
-- call's action, or with `el` (pool id -> rate) the pools it names.
local function denied(rid, capped, el)
  local fields, pre = {}, {}
  for i, p in ipairs(POOLS) do
    if (el == nil and p.elig) or (el ~= nil and el[p.id] ~= nil) then
      if p.kind == 'B' then
        crossed(A, i * 10 - 5, p.b, p.b, NOW, rid, fields, pre, true)
      elseif capped and p.en and p.r and (p.kind == 'O' or p.kind == 'P') then
        cap_reached(A, i * 10 - 5, p.c, p.s, p.r, rid, fields, pre, true)
      end
    end
  end
  for f = 1, #fields, 2 do put(fields[f], fields[f + 1]) end
  for _, e in ipairs(pre) do emit(e[1], e[3], e[4], e[2]) end
end

-- Denials: when they end by themselves ---------------------------------------------------------

-- What an overage or pay-as-you-go pool may spend in a period: its cap, or without one MAX (as
-- charge.lua's walk()).
local function spend_cap(p)
  return p.c >= 0 and p.c or MAX
end

-- Meter micro-units pool `p` could cover (at `rate`) once every reset due by time `t` has
-- happened.
local function capacity(p, rate, t)
  local fresh = p.r ~= nil and p.r <= t
  local k = p.kind
  if k == 'A' then return fresh and p.amount or p.b end
  if k == 'G' then return p.b end
  if k == 'B' then return meter_floor(p.b, rate) end
  local spent = fresh and 0 or p.s
  if k == 'O' then
    local b = fresh and 0 or p.b
    if not p.en then return b end
    return b + idiv(math.max(0, spend_cap(p) - spent), p.bp) * p.bs
  end
  if not p.en or A.st == 'trial' then return 0 end
  -- Beyond MAX only compared (total >= D, with D <= MAX), so an inexact large value will do.
  return meter_floor(math.max(0, spend_cap(p) - spent), rate)
end

-- When a denial of `D` ends by itself: the first reset of a pool in scope after which the pools
-- could cover it; 0 when no reset would (only a top-up or a settings change can).
local function retry_at(elig, D)
  local times = {}
  for _, e in ipairs(elig) do
    local p = e[1]
    if p.r and p.kind ~= 'B' and p.kind ~= 'G' then times[#times + 1] = p.r end
  end
  table.sort(times)
  for _, t in ipairs(times) do
    local total = 0
    for _, e in ipairs(elig) do
      total = total + capacity(e[1], e[2], t)
      if total >= D then return t end
    end
  end
  return 0
end

local function eligible()
  local elig = {}
  for _, p in ipairs(POOLS) do if p.elig then elig[#elig + 1] = {p, p.rate} end end
  return elig
end

-- Appends each plan pool's remaining balance to `out`, in plan order.
local function balances(out)
  for _, p in ipairs(POOLS) do out[#out + 1] = remaining(p) end
  return out
end

local function debit_rows(out, debits)
  local n0 = #out + 1
  out[n0] = 0
  for _, d in ipairs(debits) do
    if d[3] ~= 0 or d[4] ~= 0 then
      out[n0] = out[n0] + 1
      local p = BYID[d[1]] or ghost(d[1], d[2])
      out[#out + 1] = d[1]; out[#out + 1] = d[3]; out[#out + 1] = remaining(p)
      out[#out + 1] = d[4]
    end
  end
  return out
end

local function rows(out, rets)
  out[#out + 1] = #rets
  for _, r in ipairs(rets) do
    for _, v in ipairs(r) do out[#out + 1] = v end
  end
  return out
end

-- Reasons (proto Reason numbers).
local R_ALLOWED, R_INSUFFICIENT, R_CAP, R_SUSPENDED, R_STOPPED, R_NOT_ENTITLED = 1, 2, 3, 4, 5, 6

-- Account-level blocks, checked before any pool: returns reason, retry_at or nil.
local function account_block()
  if A.st == 'suspended' then return R_SUSPENDED, 0 end
  if CTX.unpaid then return R_STOPPED, 0 end  -- until a recurring charge is paid (recurring.lua)
  local stop = tonumber(A.stop) or 0
  if stop > NOW then return R_STOPPED, stop end
  return nil
end

local function check_plan()
  if not EXISTS then return {'NO_ACCOUNT'} end
  -- As charge.lua's open_account(): the plan id, with '#' and the terms' key when it has terms.
  local pk = A.plan
  if A.tk then pk = pk .. '#' .. A.tk end
  if pk ~= ARGV[2] then return {'PLAN', A.plan, A.tm or '', A.tk or ''} end
  return nil
end
