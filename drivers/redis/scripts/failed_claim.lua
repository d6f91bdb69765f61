-- Claims a failed job for a retry: the first of the three steps of `failed_retry` on Redis
-- Cluster, where the failed store and the queue live in different slots (on one server
-- `failed_retry.lua` does all in one script). The claim keeps two retries of the same failed
-- job from both pushing it; it runs out after ARGV[1] milliseconds, so a retry that died
-- before it pushed can be done again.
--
-- KEYS[1] the failed job's hash. ARGV[1] how long the claim holds, in milliseconds.
-- Returns {queue, name, payload}, or nil if the failed job is gone or claimed by another
-- retry.
local f = redis.call('HMGET', KEYS[1], 'q', 'n', 'p', 'r')
if f[1] == false then
  return nil
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if f[4] ~= false and tonumber(f[4]) ~= nil and tonumber(f[4]) > now then
  return nil
end
redis.call('HSET', KEYS[1], 'r', now + tonumber(ARGV[1]))
return { f[1], f[2] or '', f[3] or '' }
