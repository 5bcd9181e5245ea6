-- hydrate.lua: write one account's state, loaded from the ledger, back into Redis; only when
-- the account hash does not exist, so that two concurrent loads cannot both write and a load can
-- never overwrite state that a script changed since. Emits no event (the ledger has it all).
-- Records already present are kept (SET NX): they were written after an earlier load. Expired
-- records are skipped.
-- KEYS: [1..4] as in lib.lua (account hash, shard stream (unused), holds hash, hold expiries),
--   [5..] idempotency record keys.
-- ARGV: common (lib.lua) with no pools (ARGV[4] = 0), then [ARG0] n fields, n x (field, value),
--   then m holds, m x (hold id, packed hold, expires ms), then for each record key KEYS[5..]:
--   (value, expires at ms (absolute, Redis clock; 0: no expiry)).
-- Reply: 1 if it wrote the account, 0 if the account already existed.
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local i = ARG0
local n = tonumber(ARGV[i])
i = i + 1
local args = {}
for _ = 1, n do
  args[#args + 1] = ARGV[i]; args[#args + 1] = ARGV[i + 1]
  i = i + 2
end
local m = tonumber(ARGV[i])
i = i + 1
for _ = 1, m do
  redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1])
  redis.call('ZADD', KEYS[4], ARGV[i + 2], ARGV[i])
  i = i + 3
end
for k = 5, #KEYS do
  local exp = tonumber(ARGV[i + 1])
  if exp == 0 then
    redis.call('SET', KEYS[k], ARGV[i], 'NX')
  elseif exp > NOW then
    redis.call('SET', KEYS[k], ARGV[i], 'PX', exp - NOW, 'NX')
  end
  i = i + 2
end
-- Written last: until the hash exists every script answers NO_ACCOUNT and waits for us.
redis.call('HSET', KEYS[1], unpack(args))
return 1
