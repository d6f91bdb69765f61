-- Takes the lock KEYS[1] for owner ARGV[1] for ARGV[2] milliseconds: free (or expired, which
-- Redis deletes by itself) or already held by the same owner (renewed). Returns 1 or 0.
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
