-- Extends a reservation to ARGV[3] milliseconds from now if ARGV[2] is still its token.
--
-- KEYS[1] the job's hash, KEYS[2] its queue's `reserved` sorted set; ARGV[1] the member.
-- Returns 1, or 0 for a stale lease.
if redis.call('HGET', KEYS[1], 't') ~= ARGV[2] or redis.call('ZSCORE', KEYS[2], ARGV[1]) == false then
  return 0
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[1])
return 1
