-- balance.lua: bring an account up to date (resets, expiries, expired holds) and describe it.
-- KEYS: [1..4] as in lib.lua.
-- ARGV: common (lib.lua), nothing more.
-- Reply: {'OK', plan, status, anchor day, stopped until ms, now ms, created ms, test clock ms,
--   then per plan pool: balance/remaining, next reset ms, spent, cap, enabled 0/1, n lots,
--   n x (lot id, balance, expires ms), then per recurring charge of the plan (recurring.lua,
--   in the plan's order): next due ms, unpaid 0/1}, or {'NO_ACCOUNT'},
--   {'PLAN', plan, terms, key}.
local err = check_plan()
if err then return err end
maintain_all()
local out = {'OK', A.plan, A.st, ANCHOR, tonumber(A.stop) or 0, NOW, tonumber(A.created) or 0,
  tonumber(A.clk) or 0}
for _, p in ipairs(POOLS) do
  out[#out + 1] = remaining(p)
  out[#out + 1] = p.r or 0
  out[#out + 1] = p.s
  out[#out + 1] = p.c
  out[#out + 1] = p.en and 1 or 0
  local lots = p.lots or {}
  out[#out + 1] = #lots
  for _, l in ipairs(lots) do
    out[#out + 1] = l[1]; out[#out + 1] = l[2]; out[#out + 1] = l[3]
  end
end
if ARGV[ARG0 - 1] ~= '' then
  for _, it in ipairs(cjson.decode(ARGV[ARG0 - 1])) do
    local due = tonumber(A['rc:' .. it[1]]) or 0
    out[#out + 1] = due
    out[#out + 1] = notified(it[1], due) and 1 or 0
  end
end
flush()
return out
