-- Pushes a failed job back on its queue as a new job (attempts 0, available now), claiming
-- its unique key again, and removes it from the failed store (after lib.lua).
--
-- KEYS: the queue's `pending`, `reserved`, `seq`, the registry, the failed store's index,
-- the failed job's hash, its claim if it has one. ARGV: the head (see lib.lua) naming the
-- queue, the KEYS index of the failed store's index (the failed job's hash follows it), the
-- failed member, the unique key the caller read ('' for none) and the KEYS index of its
-- claim (0: none).
-- Returns the new job's sequence number (its id is `<queue>/<number>`); the id of the job
-- holding the key (a string), the failed job left where it is; or -1 if the failed job is
-- gone or is not what the caller read (its keys were built from that).
head()
local q = queues[1]
local k = num()
local index, hash = KEYS[k], KEYS[k + 1]
local member, key, claim = arg(), arg(), KEYS[num()]
local f = redis.call('HMGET', hash, 'q', 'n', 'p', 'j', 'u', 'w')
if f[1] ~= q.name or (f[5] or '') ~= key or (f[5] and not claim) then
  return -1
end
local job = { q = q, at = now, name = f[2] or '', payload = f[3] or '' }
if f[5] then
  local holder = redis.call('GET', claim)
  if holder and holder ~= f[4] then
    return holder
  end
  -- Free, or held by this failed job itself: the new job takes it over.
  redis.call('DEL', claim)
  job.claim, job.key, job.hold = claim, f[5], f[6] or 'terminal'
end
local id = push_jobs({ job })[1]
redis.call('DEL', hash)
redis.call('ZREM', index, member)
publish()
return id
