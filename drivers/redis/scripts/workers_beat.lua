-- Writes a worker's entry in the worker registry, kept for a time to live by the server's
-- clock, and deletes up to 100 expired entries (so they do not pile up in a store nobody
-- lists).
--
-- KEYS[1] the expiry index (sorted set: id -> expiry, Unix ms), KEYS[2] the entries (hash:
-- id -> entry), both in the prefix's slot. ARGV[1] the id, ARGV[2] the entry, ARGV[3] the
-- time to live in milliseconds. Returns 1.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 100)
for _, id in ipairs(expired) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('HDEL', KEYS[2], id)
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return 1
