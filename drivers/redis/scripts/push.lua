-- Pushes a batch of jobs, all or none.
--
-- KEYS, two per queue (queue i at 2i-1, 2i): the queue's `pending` sorted set and its
-- `seq` id counter. Every key of a queue shares its `{prefix:queue}` hash tag.
-- ARGV, five per job: queue index (1-based, into the pairs of KEYS), `r` (relative) or `a`
-- (absolute), milliseconds (the delay for `r`, the Unix time for `a`), name, payload.
--
-- A job is the hash `<base>job:<member>` (n = name, p = payload, a = attempts) and the
-- member in `pending` scored by the time it becomes available. Members are the queue's
-- sequence number zero-padded to 16 digits, so that jobs with the same available time come
-- out in push order. Returns the sequence numbers in push order (the driver makes the job
-- ids `<queue>/<number>` of them).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local queues = #KEYS / 2
local jobs = #ARGV / 5

local counts = {}
for q = 1, queues do
  counts[q] = 0
end
for j = 0, jobs - 1 do
  local q = tonumber(ARGV[5 * j + 1])
  counts[q] = counts[q] + 1
end

-- One INCRBY per queue reserves the ids of the whole batch.
local next_id = {}
for q = 1, queues do
  if counts[q] > 0 then
    next_id[q] = redis.call('INCRBY', KEYS[2 * q], counts[q]) - counts[q]
  end
end

local ids = {}
local entries = {}
for q = 1, queues do
  entries[q] = {}
end
for j = 0, jobs - 1 do
  local o = 5 * j
  local q = tonumber(ARGV[o + 1])
  local at = tonumber(ARGV[o + 3])
  if ARGV[o + 2] == 'r' then
    at = now + at
  end
  next_id[q] = next_id[q] + 1
  local member = string.format('%016d', next_id[q])
  local pending = KEYS[2 * q - 1]
  local base = string.sub(pending, 1, -8)
  redis.call('HSET', base .. 'job:' .. member, 'n', ARGV[o + 4], 'p', ARGV[o + 5], 'a', 0)
  local e = entries[q]
  e[#e + 1] = at
  e[#e + 1] = member
  ids[j + 1] = next_id[q]
end

-- One ZADD per 1,000 jobs of a queue (Lua's unpack fails near 8,000 values).
for q = 1, queues do
  local e = entries[q]
  for i = 1, #e, 2000 do
    redis.call('ZADD', KEYS[2 * q - 1], unpack(e, i, math.min(i + 1999, #e)))
  end
end

-- Wake idle workers of these queues (they also compute the next due time themselves, so a
-- delayed job needs the wake-up as much as an immediate one). pcall: a user whose ACL
-- forbids the channel still pushes; its workers poll instead.
for q = 1, queues do
  if counts[q] > 0 then
    redis.pcall('PUBLISH', string.sub(KEYS[2 * q - 1], 1, -8) .. 'notify', counts[q])
  end
end
return ids
