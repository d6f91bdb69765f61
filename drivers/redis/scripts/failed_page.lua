-- A page of the failed store, newest first (by failed time, then id), after a cursor
-- (after lib/paging.lua).
--
-- KEYS[1] the failed store's index. ARGV[1] the cursor's failed time ('' for the first
-- page), ARGV[2] its member, ARGV[3] the page size.
-- Returns { the next cursor as {failed time, member}, or {} after the last page, ten values
-- per failed job: member, job id, queue, name, payload, error, attempts, failed at (Unix
-- ms), unique key, until ('' for a job without a claim) }.
local limit = tonumber(ARGV[3])
local start = 0
if ARGV[1] ~= '' then
  start = rank_after(KEYS[1], tonumber(ARGV[1]), ARGV[2], true)
end
local entries = redis.call('ZREVRANGE', KEYS[1], start, start + limit - 1, 'WITHSCORES')
local base = string.sub(KEYS[1], 1, -6)
local out = {}
for i = 1, #entries, 2 do
  local f = redis.call('HMGET', base .. 'job:' .. entries[i], 'j', 'q', 'n', 'p', 'e', 'a', 'f', 'u', 'w')
  if f[7] then
    out[#out + 1] = entries[i]
    for j = 1, 9 do
      out[#out + 1] = f[j] or ''
    end
  end
end
local cursor = {}
if #entries == 2 * limit then
  cursor = { tonumber(entries[#entries]), entries[#entries - 1] }
end
return { cursor, out }
