-- general.lua: what only the general path needs, made into G by general() the first time a
-- call needs it: upkeep (period resets, expired lots and holds, the end of a stop), money
-- arithmetic, holds, returns (give_back), and the retry time of a denial. The common charge
-- (nothing due, allowed, from allowances and grants) never calls general(), so it does not pay
-- for these functions (lib.lua says what each costs); the other scripts call it first.
function general()
  if G.upkeep then return end
  BYID = {}
  for _, p in ipairs(POOLS) do BYID[p.id] = p end

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

  -- Brings pool `p` up to date at NOW when it is due (lib.lua): starts its first period, or
  -- ends the period that is over (what is left expires, the spend restarts), or expires its
  -- lots that are past.
  local function maintain(p)
    if not p.due then return end
    p.due = false
    local k = p.kind
    if k == 'G' then
      local kept = {}
      for _, l in ipairs(p.lots) do
        if lot_expired(l) then
          p.b = p.b - l[2]
          touch(p)
          emit('expire', {mv(p, -l[2], l[1])}, nil, '')
        else
          kept[#kept + 1] = l
        end
      end
      p.lots = kept
    elseif p.r == nil then
      p.r = next_reset(ARGV[p.j + 2], NOW, ANCHOR)
      touch(p)
      if k == 'A' then
        p.b = ARGV[p.j + 3] + 0
        p.fresh = true
        emit('reset', {mv(p, p.b)}, nil, '')
      elseif k == 'P' then
        emit('reset', {mv(p, 0)}, {'spent', '0'}, '')
      end
    else
      local spent = p.s
      touch(p)
      if k ~= 'P' and p.b > 0 then
        local left = p.b
        p.b = 0
        emit('expire', {mv(p, -left)}, nil, '')
      end
      p.r = next_reset(ARGV[p.j + 2], NOW, ANCHOR)
      p.s = 0
      p.o = 0
      if k == 'A' then
        p.b = ARGV[p.j + 3] + 0
        p.fresh = true
        emit('reset', {mv(p, p.b)}, nil, '')
      else
        emit('reset', {mv(p, 0)}, {'spent', fmt(spent)}, '')
      end
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

  -- Money for `m` meter micro-units at `rate` money micro-units per meter unit, rounded up
  -- (never in the caller's favour). Split so that no product exceeds 2^53.
  local function money_ceil(m, rate)
    local q = idiv(m, MICRO)
    return q * rate + ceil_div((m - q * MICRO) * rate, MICRO)
  end

  -- The same, rounded down: what a refund returns for part of a money debit.
  local function money_floor(m, rate)
    local q = idiv(m, MICRO)
    return q * rate + idiv((m - q * MICRO) * rate, MICRO)
  end

  -- Meter micro-units that `money` pays for at `rate`, rounded down.
  local function meter_floor(money, rate)
    local q = idiv(money, rate)
    return q * MICRO + idiv((money - q * rate) * MICRO, rate)
  end

  -- What an overage or pay-as-you-go pool may spend in a period: its cap, or without one MAX,
  -- so that its spend, summed over the period's charges, stays exact.
  local function spend_cap(p)
    return p.c >= 0 and p.c or MAX
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

  -- A pool a hold or charge names that the current plan no longer has: its money is kept in
  -- the account hash, its credits can only expire.
  local function ghost(id, kind)
    local p = {id = id, kind = kind, ghost = true, b = tonumber(A['b:' .. id]) or 0, s = 0,
      c = -1, o = 0, en = false, dirty = false}
    if kind == 'G' then load_lots(p) end
    BYID[id] = p
    return p
  end

  -- The pool a debit or hold names: the plan's, or a ghost.
  local function pool(id, kind)
    return BYID[id] or ghost(id, kind)
  end

  -- Give `R` meter micro-units back to the pools a charge or hold took them from, newest
  -- first. Mutates `debits` (each {pool, kind, amount, covered, period mark, rate, lots}) so
  -- that later partial returns see what is left. A return to a period that has ended, or to an
  -- expired lot, is recorded and expires at once. Returns the moves, per-pool returns and the
  -- total returned.
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
        local p = pool(d[1], d[2])
        touch(p)
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
          -- Pay-as-you-go money billed in an earlier period: owed back by billing, not
          -- re-capped.
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

  -- The holds `ids`, past their expiry, give their credits back.
  local function expire_holds(ids)
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

  -- Meter micro-units pool `p` could cover (at `rate`) once every reset due by time `t` has
  -- happened.
  local function capacity(p, rate, t)
    local fresh = p.r ~= nil and p.r <= t
    local k = p.kind
    if k == 'A' then return fresh and ARGV[p.j + 3] + 0 or p.b end
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

  -- When a denial of `D` ends by itself: the first reset of a pool in scope after which the
  -- pools could cover it; 0 when no reset would (only a top-up or a settings change can).
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

  -- Appends the returns `rets` (each {pool, amount, remaining, covered}) to `out`, counted.
  local function rows(out, rets)
    out[#out + 1] = #rets
    for _, r in ipairs(rets) do
      for _, v in ipairs(r) do out[#out + 1] = v end
    end
    return out
  end

  -- Brings the account up to date at NOW (lib.lua's maintain_all calls this unless nothing is
  -- due): the end of a stop, every pool's period and lots, the holds past their expiry.
  local function upkeep()
    if STOP_ENDED then
      put('stop', nil)
      emit('resume', {}, nil, '')
      STOP_ENDED = false
    end
    for _, p in ipairs(POOLS) do maintain(p) end
    if DUE_HOLDS then expire_holds(DUE_HOLDS) end
    DUE_HOLDS, QUIET = false, true
  end

  G.upkeep, G.civil_from_days, G.sort_lots, G.money_ceil, G.money_floor, G.meter_floor,
    G.spend_cap, G.set_hold, G.pool, G.give_back, G.expire_returns, G.retry_at, G.rows =
    upkeep, civil_from_days, sort_lots, money_ceil, money_floor, meter_floor, spend_cap,
    set_hold, pool, give_back, expire_returns, retry_at, rows
end
