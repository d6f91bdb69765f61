-- Deletes up to a chunk of failed jobs with a failed time up to a bound (a ZRANGEBYSCORE
-- bound: '(1700000000000' for "before", '+inf' for all), releasing the claims they hold;
-- returns how many (after lib/head.lua). The caller repeats it until it returns fewer, so no
-- call blocks Redis for long.
--
-- KEYS[1] the failed store's index. ARGV: the head (no queues), the bound, the chunk
-- size.
local bound, chunk = arg(), num()
local members = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', bound, 'LIMIT', 0, chunk)
local base = string.sub(KEYS[1], 1, -6)
for _, member in ipairs(members) do
  local hash = base .. 'job:' .. member
  local f = redis.call('HMGET', hash, 'j', 'u')
  redis.call('DEL', hash)
  if f[2] then
    release_claim(f[2], f[1])
  end
end
batched('ZREM', KEYS[1], members, 1)
return #members
