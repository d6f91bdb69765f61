-- Deletes the lock KEYS[1] if owner ARGV[1] holds it, or whoever holds it if ARGV[2] is
-- '1' (a release by force). Returns 1 if it was held, else 0.
--
-- Then, if ARGV[3] is '1' (one server: the jobs live in other slots), wakes the job parked
-- on the lock longest ago (`Effect::Park`): KEYS[2], the parked set, holds each job as its
-- 16-digit member followed by its queue's `pending` key. A job still parked (its hash's `k`
-- is this lock, and it waits in `pending` for a later time) is made due now, and its queue's
-- idle workers are told; entries whose job has moved on (woken, reserved, retried, gone)
-- are dropped on the way. At most 16 entries are looked at.
local held
if ARGV[2] == '1' then
  held = redis.call('DEL', KEYS[1]) == 1
else
  held = redis.call('GET', KEYS[1]) == ARGV[1]
  if held then
    redis.call('DEL', KEYS[1])
  end
end
if not held then
  return 0
end
if ARGV[3] ~= '1' then
  return 1
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for _, entry in ipairs(redis.call('ZRANGE', KEYS[2], 0, 15)) do
  redis.call('ZREM', KEYS[2], entry)
  local member = string.sub(entry, 1, 16)
  local pending = string.sub(entry, 17)
  -- `{P:Q}:pending` without `pending`: the queue's base.
  local base = string.sub(pending, 1, -8)
  local hash = base .. 'job:' .. member
  if redis.call('HGET', hash, 'k') == KEYS[1] then
    redis.call('HDEL', hash, 'k')
    local due = redis.call('ZSCORE', pending, member)
    if due and tonumber(due) > now then
      redis.call('ZADD', pending, now, member)
      redis.pcall('PUBLISH', base .. 'notify', 1)
      break
    end
  end
end
return 1
