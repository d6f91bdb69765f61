-- Deletes one failed job, releasing a claim it holds (after lib/head.lua). Returns 1 if it
-- existed.
--
-- KEYS[1] the failed store's index, KEYS[2] the failed job's hash. ARGV: the head (no
-- queues), then the failed member.
local f = redis.call('HMGET', KEYS[2], 'j', 'u')
local removed = redis.call('ZREM', KEYS[1], arg())
redis.call('DEL', KEYS[2])
if f[2] then
  release_claim(f[2], f[1])
end
return removed
