-- Adds deltas to named counters, all in one atomic call.
--
-- KEYS[1] the sorted set of counter names (all scored 0), KEYS[2] the sorted set of names
-- with a TTL scored by expiry (Unix ms). A counter's value is the string
-- `<base>c:<name>`, the base being KEYS[1] without `names`.
-- ARGV[1] the TTL in milliseconds, or '' for none (the counters written lose any TTL they
-- had); then two values per counter: name, delta (a decimal integer, added by INCRBY so it
-- never passes through Lua's floating-point numbers).
--
-- A counter whose value is not an integer (written by hand) or would overflow starts over
-- from the delta instead of failing the whole batch. Each call also prunes up to 100 names
-- whose TTL ran out, so the names of old throughput buckets do not pile up.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local names, expiry = KEYS[1], KEYS[2]
local base = string.sub(names, 1, -6)
local ttl = ARGV[1]
local expires = nil
if ttl ~= '' then
  expires = now + tonumber(ttl)
end
local members = {}
for i = 2, #ARGV, 2 do
  local name, delta = ARGV[i], ARGV[i + 1]
  local key = base .. 'c:' .. name
  local r = redis.pcall('INCRBY', key, delta)
  if type(r) == 'table' and r.err then
    redis.call('SET', key, delta)
  end
  if expires then
    redis.call('PEXPIRE', key, ttl)
    redis.call('ZADD', expiry, expires, name)
  else
    redis.call('PERSIST', key)
    redis.call('ZREM', expiry, name)
  end
  members[#members + 1] = 0
  members[#members + 1] = name
end
-- One ZADD per 1,000 names (Lua's unpack fails near 8,000 values).
for i = 1, #members, 2000 do
  redis.call('ZADD', names, unpack(members, i, math.min(i + 1999, #members)))
end
local due = redis.call('ZRANGEBYSCORE', expiry, '-inf', now, 'LIMIT', 0, 100)
for _, name in ipairs(due) do
  local left = redis.call('PTTL', base .. 'c:' .. name)
  if left == -2 then
    redis.call('ZREM', names, name)
    redis.call('ZREM', expiry, name)
  elseif left == -1 then
    redis.call('ZREM', expiry, name)
  else
    redis.call('ZADD', expiry, now + left, name)
  end
end
return #members / 2
