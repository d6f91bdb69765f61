-- Deletes the lock KEYS[1] if owner ARGV[1] holds it. Returns 1 or 0.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
