-- The worker registry's entries that have not expired by the server's clock, after deleting
-- the expired ones.
--
-- KEYS[1] the expiry index (sorted set: id -> expiry, Unix ms), KEYS[2] the entries (hash:
-- id -> entry). Returns a flat array: id, entry, id, entry... (in no particular order).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
for _, id in ipairs(expired) do
  redis.call('HDEL', KEYS[2], id)
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local out = {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local entry = redis.call('HGET', KEYS[2], id)
  if entry then
    out[#out + 1] = id
    out[#out + 1] = entry
  end
end
return out
