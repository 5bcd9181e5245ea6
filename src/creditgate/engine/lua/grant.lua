-- grant.lua: add credits to a grant pool (a lot, optionally expiring) or money to a balance pool.
-- KEYS: [1..4] as in lib.lua, [5] the grant's idempotency record.
-- ARGV: common (lib.lua), then [ARG0] pool id, [+1] amount (micro-units of the pool's unit),
--   [+2] grant id, [+3] expires at ms (0: never), [+4] note, [+5] idempotency TTL ms,
--   [+6] fingerprint, [+7] the auto top-up state this grant ends ('tu:<pool>', see
--   account.lua): 'run:<top-up id>' for the top-up it pays, 'failed' for a one-time purchase
--   (a paused auto top-up resumes), '' none.
-- Reply: {'OK', pool balance after, replayed 0/1} (a repeated grant id answers the first reply
--   with replayed 1), or {'NO_ACCOUNT'}, {'PLAN', plan, terms, key}, {'IDEM_MISMATCH', 'G'},
--   {'PAST_EXPIRY', now ms}, {'TOO_LARGE'}.
local err = check_plan()
if err then return err end
local gid, fp = ARGV[ARG0 + 2], ARGV[ARG0 + 6]
local rec = redis.call('GET', KEYS[5])
if rec then
  local r = cmsgpack.unpack(rec)
  if r.fp ~= fp then return {'IDEM_MISMATCH', 'G'} end
  local rep = r.rep
  rep[3] = 1
  return rep
end
CTX.rid = gid
maintain_all()
local p = BYID[ARGV[ARG0]]
local amt, exp = tonumber(ARGV[ARG0 + 1]), tonumber(ARGV[ARG0 + 3])
if exp > 0 and exp <= NOW then
  flush()
  return {'PAST_EXPIRY', NOW}
end
if p.b + amt > MAX then
  flush()
  return {'TOO_LARGE'}
end
p.dirty = true
p.b = p.b + amt
local lot = nil
if p.kind == 'G' then
  lot = gid
  p.lots[#p.lots + 1] = {gid, amt, exp}
  sort_lots(p.lots)
end
emit('grant', {mv(p, amt, lot)}, {'note', ARGV[ARG0 + 4], 'expires', fmt(exp)})
local ends, tu = ARGV[ARG0 + 7], A['tu:' .. p.id]
if tu and ends ~= '' and (tu == ends or (ends == 'failed' and string.sub(tu, 1, 7) == 'failed:'))
then
  put('tu:' .. p.id, nil)
end
recurring()  -- a recurring charge the pools could not pay is retried with the money added
local out = {'OK', remaining(BYID[p.id]), 0}  -- after any recurring charge it paid
set_record(KEYS[5], cmsgpack.pack({fp = fp, rep = out, m = 'G'}), ARGV[ARG0 + 5])
flush()
return out
