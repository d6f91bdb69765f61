-- The counters whose names lie in a ZRANGEBYLEX range (ARGV[1], ARGV[2]: every name that
-- starts with a prefix), in name order: two values per counter, name and value. Names whose
-- value is gone (expired, deleted by hand) are pruned from both sorted sets.
--
-- KEYS[1] the sorted set of counter names, KEYS[2] the sorted set of names with a TTL.
local names = redis.call('ZRANGEBYLEX', KEYS[1], ARGV[1], ARGV[2])
local base = string.sub(KEYS[1], 1, -6)
local out = {}
local gone = {}
for _, name in ipairs(names) do
  -- pcall: a key of another type (written by hand) is left out, not an error.
  local value = redis.pcall('GET', base .. 'c:' .. name)
  if value == false then
    gone[#gone + 1] = name
  elseif type(value) == 'string' then
    out[#out + 1] = name
    out[#out + 1] = value
  end
end
for i = 1, #gone, 1000 do
  local chunk = { unpack(gone, i, math.min(i + 999, #gone)) }
  redis.call('ZREM', KEYS[1], unpack(chunk))
  redis.call('ZREM', KEYS[2], unpack(chunk))
end
return out
