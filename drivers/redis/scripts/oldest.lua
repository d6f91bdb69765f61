-- The time (Unix ms) since which the longest-waiting available job of a queue has been
-- available: the earliest of the first due entry of `pending` (its available time) and the
-- first expired entry of `reserved` (its lease deadline). An empty array if none is due.
--
-- KEYS[1] `pending`, KEYS[2] `reserved`.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local oldest = nil
for i = 1, 2 do
  local r = redis.call('ZRANGEBYSCORE', KEYS[i], '-inf', now, 'WITHSCORES', 'LIMIT', 0, 1)
  if r[2] then
    local score = tonumber(r[2])
    if oldest == nil or score < oldest then
      oldest = score
    end
  end
end
if oldest == nil then
  return {}
end
return { oldest }
