-- recurring.lua: a plan's recurring charges (seed 000's base hosting fee; docs/TERMS.md), and
-- maintain_all(), the lazy maintenance every general-path script runs first. After lib.lua and
-- rules.lua (one prelude with them), before the operation's own file.

-- The plan's recurring charges are lib.lua's common ARGV[ARG0 - 1]: '' for none, else JSON
-- [[id, period, demand (meter micro-units), on_short ('stop'|'skip'), action, quantity,
-- attributes JSON, {pool id: rate}], ...], priced by the caller with the account's terms
-- (domain/recurring.py). Each is due at the start of each of its periods: the account field
-- 'rc:<id>' is when it is next due (absent: now, the start of the account's first period with
-- it), and 'rcd' the earliest of them, which consume's first branch checks
-- (charge.lua's open_account()). A due charge is charge.lua's walk() and take() through the
-- pools it names, all or nothing, written as a 'charge' event with request id
-- 'rec:<id>:<due ms>'. One the pools cannot pay sends 'recurring_charge_failed' once ('rf:<id>'
-- = the due mark it was sent for); then 'skip' moves on to the next period, and 'stop' also
-- sends 'account_stopped' and stops the account (CTX.unpaid, the charge stays due) until a
-- later call (a grant or purchase retries at once) finds the pools can pay it, which sends
-- 'resume'.

-- Charges recurring charge `it` due at `due`; returns whether the pools paid it, and if not the
-- meter micro-units left uncovered (after what a refused charge starts: denied()).
local function pay_recurring(it, due, rid)
  local T, rem, capped, bal, lots = walk(A, NOW, it[3], NP, it[8])
  if T == nil then error('recurring: a pool is still due after maintenance') end
  if rem > 0 then
    denied(rid, capped, it[8])
    return false, rem
  end
  local _, moves, fields, pre = take(A, T, bal, lots, false, {}, NOW, rid)
  put_charge(fields)
  for _, e in ipairs(pre or {}) do emit(e[1], e[3], e[4], e[2]) end
  emit('charge', moves, {'act', it[5], 'q', fmt(it[6]), 'at', it[7], 'rec', it[1],
    'due', fmt(due)}, rid)
  return true, 0
end

-- The marks ('rc:', 'rf:') of recurring charges not in `keep` (the plan no longer has them).
local function drop_marks(keep)
  for f in pairs(A) do
    local x = string.sub(f, 1, 3)
    if (x == 'rc:' or x == 'rf:') and not keep[f] then put(f, nil) end
  end
end

-- Whether the failure of recurring charge `id` due at `due` was notified (a 'stop' one stays
-- due at that mark: unpaid).
local function notified(id, due)
  return tonumber(A['rf:' .. id]) == due
end

-- The pools (resets, expired lots) and the holds brought up to date at NOW.
local function bring_up()
  for _, p in ipairs(POOLS) do maintain(p) end
  expire_holds()
end

-- One recurring charge `it` due at `due`, at NOW: paid, or notified once and, with on_short
-- 'stop', left due (CTX.unpaid). Returns whether the account may go on (paid, or 'skip').
local function charge_due(it, due)
  local id, stop, nf = it[1], it[4] == 'stop', 'rf:' .. it[1]
  local mark = fmt(due)
  local rid = 'rec:' .. id .. ':' .. mark
  local paid, short = true, 0
  if it[3] > 0 then paid, short = pay_recurring(it, due, rid) end
  if paid then
    if A[nf] then
      put(nf, nil)
      if stop then emit('resume', {}, {'rec', id}, rid) end
    end
    return true
  end
  if not notified(id, due) then
    put(nf, mark)
    local x = {'pool', '', 'bal', fmt(short), 'th', fmt(it[3])}
    emit('notice', {}, {'n', 'recurring_charge_failed', unpack(x)}, rid)
    if stop then emit('notice', {}, {'n', 'account_stopped', unpack(x)}, rid) end
  end
  if stop then CTX.unpaid = id end
  return not stop
end

-- Every recurring charge due by NOW, in the order of their dues, each at its due: the pools and
-- holds are first brought up to that instant (its resets happen, what expired by then expires)
-- and its events carry that time, so a period missed without a call is charged from that
-- period's credits, as it would have been then. A free charge (0) settles every period up to
-- now at once: none is charged later at a price set since.
local function recurring()
  local spec, rcd = ARGV[ARG0 - 1], tonumber(A.rcd)
  if spec == '' then
    if rcd then
      drop_marks({})
      put('rcd', nil)
    end
    return
  end
  if rcd and rcd > NOW then return end
  CTX.unpaid = nil
  flush()  -- what the caller did so far, at its time
  local items, dues, held, keep = cjson.decode(spec), {}, {}, {}
  for k, it in ipairs(items) do
    keep['rc:' .. it[1]], keep['rf:' .. it[1]] = true, true
    dues[k] = tonumber(A['rc:' .. it[1]]) or NOW
  end
  local real = NOW
  -- Bounded: a daily charge of an account untouched for years is caught up over several calls.
  for _ = 1, 400 do
    local k = nil
    for j = 1, #items do
      if not held[j] and dues[j] <= real and (k == nil or dues[j] < dues[k]) then k = j end
    end
    if k == nil then break end
    local it = items[k]
    if it[3] == 0 then
      charge_due(it, dues[k])
      dues[k] = next_reset(it[2], real, ANCHOR)
    else
      -- A period reached for the first time is charged at its start; one left unpaid (its
      -- failure notified) is tried again now, on the pools as they are.
      local due = dues[k]
      if not notified(it[1], due) then NOW = due end
      bring_up()
      flush()  -- walk() reads the account's fields
      if charge_due(it, due) then dues[k] = next_reset(it[2], due, ANCHOR) else held[k] = true end
      flush()  -- at that time
      NOW = real
    end
  end
  local low = nil
  for k, it in ipairs(items) do
    if tonumber(A['rc:' .. it[1]]) ~= dues[k] then put('rc:' .. it[1], dues[k]) end
    if low == nil or dues[k] < low then low = dues[k] end
  end
  drop_marks(keep)
  if rcd ~= low then put('rcd', low) end
end

-- `later`: the caller charges the recurring charges itself, after a change of plan or terms.
local function maintain_all(later)
  local stop = tonumber(A.stop) or 0
  if stop > 0 and NOW >= stop then
    put('stop', nil)
    emit('resume', {}, nil, '')
  end
  if not later then recurring() end
  bring_up()
end
