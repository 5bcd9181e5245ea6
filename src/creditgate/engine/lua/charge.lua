-- charge.lua: the charge, written once. consume.lua (CheckAndConsume, Reserve) and
-- consume_batch.lua (several CheckAndConsume of one account in one call) run charge();
-- settle.lua charges a settlement's extra with plan_charge() and apply().
--
-- A charge prices the request (demand), plans which pools cover it (plan_charge), takes it from
-- them (apply, take_lots), records the answer under the request id (set_record) and writes and
-- announces it (flush). Its common case, an allowed charge with nothing due, runs straight
-- through: maintain_all() finds nothing to do (quiet) and general.lua is never built.

-- Takes `amt` from grant lots, soonest-expiring first (their stored order). Returns what was
-- taken of each lot, {id, amount, expires}, and the lots that are not empty.
local function take_lots(lots, amt)
  local taken, kept = {}, {}
  for _, l in ipairs(lots) do
    if amt > 0 and l[2] > 0 then
      local t = math.min(amt, l[2])
      l[2] = l[2] - t
      amt = amt - t
      taken[#taken + 1] = {l[1], t, l[3]}
    end
    if l[2] > 0 then kept[#kept + 1] = l end
  end
  return taken, kept
end

-- Plan (without changing anything) how `D` meter micro-units would be covered by `elig`, a list
-- of {pool, rate}. Returns the takes, what is left uncovered, and whether a cap stopped it.
-- Money and overage pools need general.lua's arithmetic.
local function plan_charge(elig, D)
  local takes, rem, capped = {}, D, false
  for _, e in ipairs(elig) do
    if rem <= 0 then break end
    local p, rate = e[1], e[2]
    local k = p.kind
    if k == 'A' or k == 'G' then
      local t = math.min(p.b, rem)
      if t > 0 then takes[#takes + 1] = {p, t, t, 0, rate}; rem = rem - t end
    elseif k == 'B' or k == 'P' then
      general()
      local money_ceil, spend_cap = G.money_ceil, G.spend_cap
      local avail
      if k == 'B' then avail = p.b
      elseif not p.en or A.st == 'trial' then avail = 0
      else avail = math.max(0, spend_cap(p) - p.s) end
      -- Exact while it is at most MAX; beyond that it is only ever compared with avail <= MAX.
      local need = money_ceil(rem, rate)
      if avail >= need then
        takes[#takes + 1] = {p, need, rem, 0, rate}
        rem = 0
      else
        local cov = G.meter_floor(avail, rate)
        if cov > 0 then
          takes[#takes + 1] = {p, money_ceil(cov, rate), cov, 0, rate}
          rem = rem - cov
        end
        if k == 'P' and p.en and A.st ~= 'trial' then capped = true end
      end
    elseif k == 'O' then
      general()
      local t = math.min(p.b, rem)
      local blocks = 0
      if rem > t and p.en then
        local n = ceil_div(rem - t, p.bs)
        local price = n * p.bp
        if price > G.spend_cap(p) - p.s then capped = true
        else blocks = n; t = rem end
      end
      if t > 0 then takes[#takes + 1] = {p, t, t, blocks, rate}; rem = rem - t end
    end
  end
  return takes, rem, capped
end

-- Carry out planned takes: returns the debit records, each {pool, kind, amount, covered,
-- period mark, rate, lots taken}, and the moves.
local function apply(takes)
  local debits, moves = {}, {}
  for _, t in ipairs(takes) do
    local p, amt, cov, blocks, rate = t[1], t[2], t[3], t[4], t[5]
    local lots = {}
    touch(p)
    if blocks > 0 then
      local credits, price = blocks * p.bs, blocks * p.bp
      p.b = p.b + credits
      p.s = p.s + price
      emit('overage_block', {mv(p, credits)}, {'price', fmt(price), 'blocks', fmt(blocks)})
    end
    if p.kind == 'G' then
      lots, p.lots = take_lots(p.lots, amt)
      p.b = p.b - amt
      for _, l in ipairs(lots) do moves[#moves + 1] = mv(p, -l[2], l[1]) end
    else
      if p.kind == 'P' then p.s = p.s + amt else p.b = p.b - amt end
      moves[#moves + 1] = mv(p, -amt)
    end
    debits[#debits + 1] = {p.id, p.kind, amt, cov, p.r or 0, rate, lots}
  end
  return debits, moves
end

-- Appends each plan pool's remaining balance to `out`, in plan order.
local function balances(out)
  for _, p in ipairs(POOLS) do out[#out + 1] = remaining(p) end
  return out
end

-- Appends the debits with anything in them to `out`, counted: (pool, amount, remaining,
-- covered) each.
local function debit_rows(out, debits)
  local n0 = #out + 1
  out[n0] = 0
  for _, d in ipairs(debits) do
    if d[3] ~= 0 or d[4] ~= 0 then
      out[n0] = out[n0] + 1
      local p = G.pool and G.pool(d[1], d[2])
      if not p then  -- a debit of this call: one of the plan's pools
        for _, q in ipairs(POOLS) do if q.id == d[1] then p = q end end
      end
      out[#out + 1] = d[1]; out[#out + 1] = d[3]; out[#out + 1] = remaining(p)
      out[#out + 1] = d[4]
    end
  end
  return out
end

-- The request in ARGV from ARG0 on (consume.lua's layout), whose idempotency record is the key
-- `rk` and whose id is `rid`: CheckAndConsume (mode 'C') or Reserve ('R'). Returns
-- consume.lua's reply.
local function charge(rk, rid)
  if FLUSHED then  -- a batch's earlier charge was written: this one starts afresh
    EV, W, SNAP_H, SNAP_R, SNAPPED, DIRTY, FLUSHED = {}, {}, {}, {}, false, {}, false
  end
  if PLAN_ERR then return PLAN_ERR end
  local mode, fp = ARGV[ARG0], ARGV[ARG0 + 2]
  local rec = redis.call('GET', rk)
  if rec then
    local r = cmsgpack.unpack(rec)
    if r.fp ~= fp then return {'IDEM_MISMATCH', r.m} end
    local rep = r.rep
    rep[7] = 1
    return {'REPLAY', r.pl or ARGV[2], r.mt or '', rep}
  end

  CTX.rid, CTX.act, CTX.q, CTX.at = rid, ARGV[ARG0 + 6], ARGV[ARG0 + 3], ARGV[ARG0 + 7]
  maintain_all()
  local uc, per = ARGV[ARG0 + 4] + 0, ARGV[ARG0 + 5] + 0
  local D = demand(ARGV[ARG0 + 3] + 0, uc, per)
  if D == nil then
    flush()
    return {'TOO_LARGE'}
  end

  local elig = {}  -- the pools in scope for this call's action, each {pool, rate}
  for _, p in ipairs(POOLS) do
    if ARGV[p.j + 8] == '1' then
      local rate = ARGV[p.j + 4]
      elig[#elig + 1] = {p, rate ~= '0' and rate + 0 or 0}
    end
  end
  local reason, retry = BLOCK, BLOCK_UNTIL
  local takes, rem, capped = {}, D, false
  if reason == nil then
    if #elig == 0 and D > 0 then
      reason, retry = R_NOT_ENTITLED, 0
    else
      takes, rem, capped = plan_charge(elig, D)
      if rem > 0 then
        reason = capped and R_CAP or R_INSUFFICIENT
        general()
        retry = G.retry_at(elig, D)
      end
    end
  end
  if reason ~= nil then
    flush()
    return balances(debit_rows({'OK', 0, reason, D, retry, NOW, 0, rem, 0}, {}))
  end

  if ARGV[ARG0 + 8] == '1' then
    -- A dry run: what the charge would take, with each pool's balance as it would be after.
    local out = {'OK', 1, R_ALLOWED, D, 0, NOW, 0, 0, 0, #takes}
    for _, t in ipairs(takes) do
      local p, amt = t[1], t[2]
      local after = remaining(p)
      if p.kind == 'O' then after = after + t[4] * p.bs - amt
      elseif after >= 0 then after = after - amt end
      out[#out + 1] = p.id; out[#out + 1] = amt; out[#out + 1] = after; out[#out + 1] = t[3]
    end
    flush()
    return balances(out)
  end

  local debits, moves = apply(takes)
  local mt = ARGV[ARG0 + 11]
  local exp, recd = 0, nil
  if mode == 'R' then
    exp = NOW + ARGV[ARG0 + 10]
    local el = {}
    for _, e in ipairs(elig) do el[#el + 1] = {e[1].id, e[2]} end
    general()
    G.set_hold(rid, cmsgpack.pack({d = debits, cov = D, uc = uc, per = per, el = el, exp = exp,
      mt = mt}), exp)
    emit('hold', moves, {'expires', fmt(exp)})
  else
    emit('charge', moves)
  end
  local out = balances(debit_rows({'OK', 1, R_ALLOWED, D, 0, NOW, 0, 0, exp}, debits))
  if mode == 'R' then
    recd = {fp = fp, m = mode, mt = mt, pl = ARGV[2], st = 'held', rep = out}
  else
    recd = {fp = fp, m = mode, mt = mt, pl = ARGV[2], d = debits, cov = D, uc = uc, per = per,
      ref = 0, rep = out}
  end
  set_record(rk, cmsgpack.pack(recd), ARGV[ARG0 + 9])
  flush()
  return out
end
