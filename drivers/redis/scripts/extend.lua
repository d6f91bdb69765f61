-- Renews reservations, each only if its token is still the job's current one (after
-- lib/head.lua).
--
-- ARGV: the head, the lease in milliseconds, then three values per lease:
-- queue number, member, token.
-- Returns 1 (renewed) or 0 (stale: nothing done) per lease.
local deadline = now() + num()
local out = {}
while A <= #ARGV do
  local q, member, token = queue_of[arg()], arg(), arg()
  local hash = q.base .. 'job:' .. member
  if redis.call('HGET', hash, 't') == token and redis.call('ZSCORE', q.reserved, member) then
    redis.call('ZADD', q.reserved, deadline, member)
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
