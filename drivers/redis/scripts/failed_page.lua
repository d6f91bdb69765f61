-- A page of the failed store, newest first: ranks ARGV[1]..ARGV[2] of the index, reversed.
--
-- KEYS[1] the failed store's index. Returns eight values per failed job: member, job id,
-- queue, name, payload, error, attempts, failed at (Unix ms).
local members = redis.call('ZREVRANGE', KEYS[1], ARGV[1], ARGV[2])
local base = string.sub(KEYS[1], 1, -6)
local out = {}
for _, member in ipairs(members) do
  local f = redis.call('HMGET', base .. 'job:' .. member, 'j', 'q', 'n', 'p', 'e', 'a', 'f')
  if f[7] then
    out[#out + 1] = member
    for i = 1, 7 do
      out[#out + 1] = f[i] or ''
    end
  end
end
return out
