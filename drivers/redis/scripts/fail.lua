-- Moves a reserved job to the failed store if ARGV[2] is still its token.
--
-- KEYS[1] the job's hash, KEYS[2] its queue's `reserved` sorted set, KEYS[3] the failed
-- store's id counter, KEYS[4] the failed store's index (sorted set scored by failed time).
-- ARGV[1] the member, ARGV[3] the job id (`<queue>/<number>`), ARGV[4] the queue,
-- ARGV[5] the error.
-- The failed job is the hash `<failed base>job:<failed member>` (j = job id, q = queue,
-- n = name, p = payload, e = error, a = attempts, f = failed at, Unix ms).
-- Returns 1, or 0 for a stale lease.
if redis.call('HGET', KEYS[1], 't') ~= ARGV[2] then
  return 0
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local job = redis.call('HMGET', KEYS[1], 'n', 'p', 'a')
local id = redis.call('INCR', KEYS[3])
local member = string.format('%016d', id)
local base = string.sub(KEYS[4], 1, -6)
redis.call('HSET', base .. 'job:' .. member,
  'j', ARGV[3], 'q', ARGV[4], 'n', job[1] or '', 'p', job[2] or '', 'e', ARGV[5],
  'a', job[3] or '0', 'f', now)
redis.call('ZADD', KEYS[4], now, member)
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
