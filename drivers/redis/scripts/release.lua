-- Puts a reserved job back, available ARGV[3] milliseconds from now, if ARGV[2] is still
-- its token; with ARGV[4] == '1' the attempt is given back.
--
-- KEYS[1] the job's hash, KEYS[2] `reserved`, KEYS[3] `pending`; ARGV[1] the member.
-- Returns 1, or 0 for a stale lease.
if redis.call('HGET', KEYS[1], 't') ~= ARGV[2] then
  return 0
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[1], 't')
if ARGV[4] == '1' and tonumber(redis.call('HGET', KEYS[1], 'a') or '0') > 0 then
  redis.call('HINCRBY', KEYS[1], 'a', -1)
end
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[3]), ARGV[1])
-- Wake idle workers; pcall: without the channel in the ACL they poll instead.
redis.pcall('PUBLISH', string.sub(KEYS[3], 1, -8) .. 'notify', 1)
return 1
