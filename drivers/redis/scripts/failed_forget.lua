-- Deletes one failed job. KEYS[1] the index, KEYS[2] the failed job's hash; ARGV[1] its
-- member. Returns 1 if it existed.
local removed = redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
return removed
