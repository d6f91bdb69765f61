-- Deletes up to ARGV[2] failed jobs with a failed time up to ARGV[1] (a ZRANGEBYSCORE bound:
-- '(1700000000000' for "before", '+inf' for all); returns how many. The caller repeats it
-- until it returns fewer, so no call blocks Redis for long.
--
-- KEYS[1] the failed store's index.
local members = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local base = string.sub(KEYS[1], 1, -6)
for _, member in ipairs(members) do
  redis.call('DEL', base .. 'job:' .. member)
  redis.call('ZREM', KEYS[1], member)
end
return #members
