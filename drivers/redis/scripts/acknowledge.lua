-- Deletes finished jobs whose lease is still current.
--
-- KEYS, two per lease: the job's hash and its queue's `reserved` sorted set.
-- ARGV, two per lease: the member and the token.
-- Returns 1 (deleted) or 0 (stale lease: nothing done) per lease. The deletes are batched:
-- one DEL for all the jobs and one ZREM per queue, at most 1,000 values per call (Lua's
-- unpack fails near 8,000).
local out = {}
local jobs = {}
local by_queue = {}
local queues = {}
local done = {}
for i = 1, #KEYS / 2 do
  local job = KEYS[2 * i - 1]
  -- A lease given twice in one batch is acknowledged once: the deletes come at the end.
  if not done[job] and redis.call('HGET', job, 't') == ARGV[2 * i] then
    done[job] = true
    jobs[#jobs + 1] = job
    local reserved = KEYS[2 * i]
    local members = by_queue[reserved]
    if members == nil then
      members = {}
      by_queue[reserved] = members
      queues[#queues + 1] = reserved
    end
    members[#members + 1] = ARGV[2 * i - 1]
    out[i] = 1
  else
    out[i] = 0
  end
end
for i = 1, #jobs, 1000 do
  redis.call('DEL', unpack(jobs, i, math.min(i + 999, #jobs)))
end
for _, reserved in ipairs(queues) do
  local members = by_queue[reserved]
  for i = 1, #members, 1000 do
    redis.call('ZREM', reserved, unpack(members, i, math.min(i + 999, #members)))
  end
end
return out
