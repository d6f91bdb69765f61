-- Removes a worker's entry from the worker registry.
--
-- KEYS[1] the expiry index, KEYS[2] the entries. ARGV[1] the id. Returns 1 if the entry was
-- there and had not expired by the server's clock, else 0.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expires = redis.call('ZSCORE', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
if expires and tonumber(expires) > now then
  return 1
end
return 0
