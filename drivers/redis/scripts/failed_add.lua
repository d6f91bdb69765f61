-- Adds a failed job to the failed store: the second of the three steps of `fail` on Redis
-- Cluster, where the queue and the failed store live in different slots (on one server
-- `fail.lua` does all in one script).
--
-- KEYS[1] the failed store's id counter, KEYS[2] its index (sorted set scored by failed
-- time). ARGV[1] the job id (`<queue>/<number>`), ARGV[2] the queue, ARGV[3] the name,
-- ARGV[4] the payload, ARGV[5] the error, ARGV[6] the attempts.
-- The failed job is the hash `<failed base>job:<failed member>` (j = job id, q = queue,
-- n = name, p = payload, e = error, a = attempts, f = failed at, Unix ms), as `fail.lua`
-- writes it. Returns the failed member.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local id = redis.call('INCR', KEYS[1])
local member = string.format('%016d', id)
local base = string.sub(KEYS[2], 1, -6)
redis.call('HSET', base .. 'job:' .. member,
  'j', ARGV[1], 'q', ARGV[2], 'n', ARGV[3], 'p', ARGV[4], 'e', ARGV[5], 'a', ARGV[6], 'f', now)
redis.call('ZADD', KEYS[2], now, member)
return member
