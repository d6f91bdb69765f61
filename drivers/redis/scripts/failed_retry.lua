-- Pushes a failed job back on its queue as a new job (attempts 0, available now) and
-- removes it from the failed store.
--
-- KEYS[1] the failed store's index, KEYS[2] the failed job's hash, KEYS[3] the queue's
-- `pending`, KEYS[4] the queue's id counter. ARGV[1] the failed member, ARGV[2] the queue
-- the caller read from the hash (the keys were built from it).
-- Returns the new job's sequence number (its id is `<queue>/<number>`), or -1 if the
-- failed job is gone or not of that queue.
local f = redis.call('HMGET', KEYS[2], 'q', 'n', 'p')
if f[1] == false or f[1] ~= ARGV[2] then
  return -1
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local id = redis.call('INCR', KEYS[4])
local member = string.format('%016d', id)
local base = string.sub(KEYS[3], 1, -8)
redis.call('HSET', base .. 'job:' .. member, 'n', f[2] or '', 'p', f[3] or '', 'a', 0)
redis.call('ZADD', KEYS[3], now, member)
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[1], ARGV[1])
-- Wake idle workers; pcall: without the channel in the ACL they poll instead.
redis.pcall('PUBLISH', base .. 'notify', 1)
return id
