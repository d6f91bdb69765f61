-- Writes a job's record fenced by its lease: only while the job's token is the lease's.
--
-- KEYS[1] the job's hash, KEYS[2] the record's key (both in the queue's slot). ARGV[1] the
-- lease's token, ARGV[2] the value, ARGV[3] how long it is kept in milliseconds (0: the
-- record is deleted, a replacement that is already expired).
-- Returns 1 (written) or 0 (the lease is stale: nothing done).
if redis.call('HGET', KEYS[1], 't') ~= ARGV[1] then
  return 0
end
local ttl = tonumber(ARGV[3])
if ttl > 0 then
  redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
else
  redis.call('DEL', KEYS[2])
end
return 1
