-- consume_general.lua: the rest of consume.lua (KEYS, ARGV and reply there), after lib.lua +
-- rules.lua: a new account or another plan, a repeated request id, and every charge the first
-- branch did not answer. Everything due is brought up to date first (and written, so that the
-- charge sees it); then the same charge() answers, or the denial is described.
local err = check_plan()
if err then return err end
local rid, fp = ARGV[ARG0 + 1], ARGV[ARG0 + 2]

local rec = PRE_REC
if rec == nil then rec = redis.call('GET', KEYS[5]) end
if rec then
  local r = cmsgpack.unpack(rec)
  if r.fp ~= fp then return {'IDEM_MISMATCH', r.m} end
  local rep = r.rep
  rep[7] = 1
  return {'REPLAY', r.pl or ARGV[2], r.mt or '', rep}
end

CTX.rid, CTX.act, CTX.q, CTX.at = rid, ARGV[ARG0 + 6], ARGV[ARG0 + 3], ARGV[ARG0 + 7]
maintain_all()
flush()
local D = demand(tonumber(ARGV[ARG0 + 3]), tonumber(ARGV[ARG0 + 4]), tonumber(ARGV[ARG0 + 5]))
if D == nil then return {'TOO_LARGE'} end

local reason, retry = account_block()
local rem = D
if reason == nil then
  local out, capped = nil, PRE_CAPPED
  rem = PRE_REM  -- the first branch's denial, when nothing was due
  if rem == nil then
    out, rem, capped = charge(A, NOW, NP, ARG0, KEYS[5], rid)
    if out then return out end
  end
  if rem == nil then return redis.error_reply('consume: a pool is still due after maintenance') end
  local elig = eligible()
  if #elig == 0 and D > 0 then
    reason, retry = R_NOT_ENTITLED, 0
  else
    reason = capped and R_CAP or R_INSUFFICIENT
    retry = retry_at(elig, D)
    if ARGV[ARG0 + 8] ~= '1' then  -- never on a dry run
      denied(rid, capped, nil)
      flush()
    end
  end
end
return balances(debit_rows({'OK', 0, reason, D, retry, NOW, 0, rem, 0}, {}))
