-- Deletes up to ARGV[n] jobs of a queue that are not reserved, releasing their claims;
-- returns how many (after lib/head.lua). The caller repeats it until it returns fewer, so no
-- call blocks Redis for long.
--
-- ARGV: the head naming the one queue, then the chunk size.
local q = queues[1]
local members = redis.call('ZRANGE', q.pending, 0, num() - 1)
for _, member in ipairs(members) do
  local hash = q.base .. 'job:' .. member
  local key = redis.call('HGET', hash, 'u')
  redis.call('DEL', hash)
  if key then
    release_claim(key, job_id(q, member))
  end
end
if #members > 0 then
  redis.call('ZREMRANGEBYRANK', q.pending, 0, #members - 1)
end
return #members
