-- Pushes a failed job back on its queue as a new job (attempts 0, available now), claiming
-- its unique key again, and removes it from the failed store (after lib/head.lua and
-- lib/push.lua).
--
-- KEYS: the queue's `pending`, `reserved`, `seq`, the failed store's index, the failed
-- job's hash, its claim if it has one, the registry. ARGV: the head naming the queue, the
-- reference of the failed store's index (the failed job's hash is the next key), the failed
-- member, then the job as `read_job` reads it, made by the caller from the failed job it
-- read.
-- Returns the new job's sequence number (its id is `<queue>/<number>`); the id of the job
-- holding the key (a string), the failed job left where it is; or -1 if the failed job is
-- gone or is not what the caller read (its keys were built from it).
local q = queues[1]
local ref = num()
local index, hash = key(ref), key(ref + 1)
local member = arg()
local job = read_job()
local claim = ARGV[job + 4] ~= '0' and key(ARGV[job + 4]) or nil
local f = redis.call('HMGET', hash, 'q', 'j', 'u')
if f[1] ~= q.name or (f[3] or nil) ~= (claim and ARGV[job + 5]) then
  return -1
end
if claim then
  local holder = redis.call('GET', claim)
  if holder and holder ~= f[2] then
    return holder
  end
  -- Free, or held by this failed job itself: the new job takes it over.
  redis.call('DEL', claim)
end
local id = push_jobs({ job })[1]
redis.call('DEL', hash)
redis.call('ZREM', index, member)
publish()
return id
