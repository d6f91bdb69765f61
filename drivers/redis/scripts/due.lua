-- Milliseconds until the earliest entry of the given sorted sets (`pending` by available
-- time, `reserved` by lease deadline) is due: 0 if one is due now, -1 if all are empty.
-- Capped at a day.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local earliest = nil
for i = 1, #KEYS do
  local r = redis.call('ZRANGE', KEYS[i], 0, 0, 'WITHSCORES')
  if r[2] then
    local score = tonumber(r[2])
    if earliest == nil or score < earliest then
      earliest = score
    end
  end
end
if earliest == nil then
  return -1
end
local wait = earliest - now
if wait < 0 then
  return 0
end
if wait > 86400000 then
  return 86400000
end
return wait
