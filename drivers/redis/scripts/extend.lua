-- Renews reservations, each only if its token is still the job's current one (after
-- lib/head.lua).
--
-- ARGV: the head, the lease in milliseconds, then three values per lease:
-- queue number, member, token.
-- Returns per lease 1 (renewed), 2 (renewed, but the job carries a `cancel` record:
-- `Track::cancel` asked to stop it) or 0 (stale: nothing done).
local deadline = now() + num()
local out = {}
while A <= #ARGV do
  local q, member, token = queue_of[arg()], arg(), arg()
  local hash = q.base .. 'job:' .. member
  if redis.call('HGET', hash, 't') == token and redis.call('ZSCORE', q.reserved, member) then
    redis.call('ZADD', q.reserved, deadline, member)
    if redis.call('EXISTS', q.base .. 'record:' .. member .. ':cancel') == 1 then
      out[#out + 1] = 2
    else
      out[#out + 1] = 1
    end
  else
    out[#out + 1] = 0
  end
end
return out
