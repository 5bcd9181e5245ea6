-- account.lua: create an account, change its plan, status or anchor, its pool settings, or its
-- test clock.
-- KEYS: [1..4] as in lib.lua.
-- ARGV: common (lib.lua; the pools are those of the plan the account has after the change,
--   ARGV[2] the plan it has before), then [ARG0] operation and:
--   create:   [+1] status, [+2] anchor day (0: today's day of month), [+3] '1' once the
--             ledger was found not to know the account; until then a missing account is
--             answered NO_ACCOUNT, so the engine loads it from the ledger first (and the
--             account then EXISTS) instead of creating it afresh over its history, [+4] plan
--             id, [+5] terms (canonical JSON, '' none), [+6] their key (ARGV[2] is the plan's
--             key: plan id '#' terms key)
--   update:   [+1] new plan, [+2] status or '', [+3] anchor day or '0', [+4] n, then n x
--             (allowance pool id, new amount - old amount)
--   terms:    [+1] terms (canonical JSON, '' none: the plan as it is), [+2] their key, [+3] n,
--             then n x (allowance pool id, new amount - old amount), as update's: seats or an
--             allowance changed mid-period change this period's allowance at once, its use kept
--   settings: [+1] pool id, [+2] cap or '', [+3] enabled '1'/'0' or '', [+4] '1' when a cap
--             below this period's spend stops the whole account (else only the pool stops)
--   clock:    [+1] milliseconds to move the account's test clock forward, [+2] or an absolute
--             time in ms to move it to (0: none); it never moves back
--   autotopup: [+1] balance pool id, [+2] 'threshold,amount,monthly max (-1: none)' to turn
--             auto top-up on ('au:<pool>'), '' to turn it off; turned on at or below the
--             threshold, it starts a top-up at once (charge.lua's crossed())
--   topup:    [+1] balance pool id, [+2] the top-up state it must be in ('run:<top-up id>'),
--             [+3] the state to put ('failed:<top-up id>', 'max:<until ms>'): a top-up that
--             failed or would pass the monthly maximum; answered {'UNCHANGED'} when not in it
-- Reply: {'OK', stopped until ms, now ms (clock: the clock's new time)}, or {'NO_ACCOUNT'},
--   {'EXISTS'}, {'PLAN', plan, terms, key}, {'CLOCK_BACKWARDS', now ms}, {'UNCHANGED'}.
local op = ARGV[ARG0]
if op == 'create' then
  if EXISTS then return {'EXISTS'} end
  if ARGV[ARG0 + 3] ~= '1' then return {'NO_ACCOUNT'} end
  ANCHOR = tonumber(ARGV[ARG0 + 2])
  if ANCHOR == 0 then
    local _, _, d = civil_from_days(math.floor(NOW / DAY))
    ANCHOR = d
  end
  put('plan', ARGV[ARG0 + 4])
  if ARGV[ARG0 + 5] ~= '' then
    put('tm', ARGV[ARG0 + 5])
    put('tk', ARGV[ARG0 + 6])
  end
  put('st', ARGV[ARG0 + 1])
  put('anc', ANCHOR)
  put('created', NOW)
  if ARGV[3] == '1' then put('clk', NOW) end
  emit('account', {}, {'op', 'create', 'plan', ARGV[ARG0 + 4], 'status', ARGV[ARG0 + 1],
    'anchor', fmt(ANCHOR), 'terms', ARGV[ARG0 + 5]}, '')
  maintain_all()
  flush()
  return {'OK', 0, NOW}
end

local err = check_plan()
if err then return err end

-- Allowances whose amount changed (n at ARGV[at], then n x (pool id, delta)) keep this
-- period's use: what a smaller allowance cannot absorb is kept as debt. Returns the moves.
local function carry_over(at)
  local moves = {}
  local n = tonumber(ARGV[at])
  for i = 0, n - 1 do
    local p = BYID[ARGV[at + 1 + i * 2]]
    local delta = tonumber(ARGV[at + 2 + i * 2])
    if p and not p.fresh then
      local before = p.b
      local left = p.b - p.o + delta
      p.b = math.max(0, left)
      p.o = math.max(0, -left)
      p.dirty = true
      if p.b ~= before then moves[#moves + 1] = mv(p, p.b - before) end
    end
  end
  return moves
end

if op == 'update' then
  local plan, st, anc = ARGV[ARG0 + 1], ARGV[ARG0 + 2], tonumber(ARGV[ARG0 + 3])
  if anc > 0 then
    put('anc', anc)
    ANCHOR = anc
  end
  if st ~= '' then put('st', st) end
  put('plan', plan)
  maintain_all(true)
  local moves = carry_over(ARG0 + 4)
  emit('account', moves, {'op', 'update', 'plan', plan, 'status', A.st, 'anchor', fmt(ANCHOR)},
    '')
  recurring()  -- after the allowances changed: the new plan's charges see its amounts
  flush()
  return {'OK', tonumber(A.stop) or 0, NOW}
end

if op == 'terms' then
  local tm = ARGV[ARG0 + 1]
  put('tm', tm ~= '' and tm or nil)
  put('tk', tm ~= '' and ARGV[ARG0 + 2] or nil)
  maintain_all(true)
  emit('account', carry_over(ARG0 + 3), {'op', 'terms', 'terms', tm}, '')
  recurring()
  flush()
  return {'OK', tonumber(A.stop) or 0, NOW}
end

maintain_all()
if op == 'settings' then
  local p = BYID[ARGV[ARG0 + 1]]
  local cap, en = ARGV[ARG0 + 2], ARGV[ARG0 + 3]
  local extra = {'op', 'settings', 'pool', p.id}
  if cap ~= '' then
    p.c = tonumber(cap)
    put('c:' .. p.id, p.c)
    if A['cr:' .. p.id] then put('cr:' .. p.id, nil) end  -- spend_cap_reached re-arms
    extra[#extra + 1] = 'cap'; extra[#extra + 1] = cap
  end
  if en ~= '' then
    p.en = en == '1'
    put('e:' .. p.id, en)
    extra[#extra + 1] = 'enabled'; extra[#extra + 1] = en
  end
  -- The zero move carries what the pool can still spend under its new settings.
  emit('account', {mv(p, 0)}, extra, '')
  -- A cap lowered below this period's spend stops the whole account until the period renews
  -- (seed 000); otherwise the pool alone has nothing left until then (seed 004).
  if ARGV[ARG0 + 4] == '1' and p.c >= 0 and p.c < p.s and p.r and p.r > (tonumber(A.stop) or 0)
  then
    put('stop', p.r)
    emit('stop', {}, {'until', fmt(p.r), 'pool', p.id, 'spent', fmt(p.s), 'cap', fmt(p.c)}, '')
    emit('notice', {}, {'n', 'account_stopped', 'pool', p.id, 'bal', fmt(p.s), 'th', fmt(p.c)},
      '')
  end
elseif op == 'autotopup' or op == 'topup' then
  local id = ARGV[ARG0 + 1]
  local p = BYID[id]
  if op == 'topup' then
    if A['tu:' .. id] ~= ARGV[ARG0 + 2] then
      flush()
      return {'UNCHANGED'}
    end
    put('tu:' .. id, ARGV[ARG0 + 3])
    emit('account', {}, {'op', 'topup', 'pool', id, 'state', ARGV[ARG0 + 3]}, '')
  else
    local au = ARGV[ARG0 + 2]
    put('au:' .. id, au ~= '' and au or nil)
    emit('account', {}, {'op', 'autotopup', 'pool', id, 'settings', au}, '')
    if au ~= '' then
      local fields, pre = {}, {}
      for i, q in ipairs(POOLS) do
        if q == p then crossed(A, i * 10 - 5, p.b, p.b, NOW, 'autotopup', fields, pre) end
      end
      for f = 1, #fields, 2 do put(fields[f], fields[f + 1]) end
      for _, e in ipairs(pre) do emit(e[1], e[3], e[4], e[2]) end
    end
  end
elseif op == 'clock' then
  local target = NOW + tonumber(ARGV[ARG0 + 1])
  local to = tonumber(ARGV[ARG0 + 2])
  if to > 0 then
    if to < NOW then
      flush()
      return {'CLOCK_BACKWARDS', NOW}
    end
    target = to
  end
  put('clk', target)
  emit('clock', {}, {'from', fmt(NOW), 'to', fmt(target)}, '')
  flush()
  return {'OK', tonumber(A.stop) or 0, target}
end
flush()
return {'OK', tonumber(A.stop) or 0, NOW}
