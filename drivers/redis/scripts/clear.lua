-- Deletes up to ARGV[1] jobs of a queue that are not reserved; returns how many.
-- The caller repeats it until it returns fewer, so no call blocks Redis for long.
--
-- KEYS[1] `pending`.
local members = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)
local base = string.sub(KEYS[1], 1, -8)
for _, member in ipairs(members) do
  redis.call('DEL', base .. 'job:' .. member)
end
if #members > 0 then
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, #members - 1)
end
return #members
