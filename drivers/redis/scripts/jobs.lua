-- A page of the jobs of a queue in one state, first due first (by due time, then member),
-- after a cursor (after lib/paging.lua).
--
-- KEYS[1] the queue's `pending`, KEYS[2] its `reserved`. ARGV[1] the state (`w` waiting:
-- in `pending` and due; `d` delayed: in `pending`, not due yet; `r` reserved), ARGV[2] the
-- cursor's due time ('' for the first page), ARGV[3] its member, ARGV[4] the page size.
-- Returns { the next cursor as {due time, member}, or {} after the last page, seven values
-- per job: member, due time (Unix ms), name, attempts, unique key, until ('' for a job
-- without a claim), payload }.
local state, limit = ARGV[1], tonumber(ARGV[4])
local clock = redis.call('TIME')
local time = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local set = KEYS[1]
if state == 'r' then
  set = KEYS[2]
end
local start = 0
if state == 'd' then
  start = redis.call('ZCOUNT', set, '-inf', time)
end
if ARGV[2] ~= '' then
  start = math.max(start, rank_after(set, tonumber(ARGV[2]), ARGV[3], false))
end
local entries = redis.call('ZRANGE', set, start, start + limit - 1, 'WITHSCORES')
local base = string.sub(KEYS[1], 1, -8)
local out, seen, last = {}, 0, nil
for i = 1, #entries, 2 do
  local member, due = entries[i], tonumber(entries[i + 1])
  if state == 'w' and due > time then
    break
  end
  seen = seen + 1
  last = { due, member }
  local f = redis.call('HMGET', base .. 'job:' .. member, 'n', 'a', 'u', 'w', 'p')
  if f[1] or f[2] then
    out[#out + 1] = member
    out[#out + 1] = due
    out[#out + 1] = f[1] or ''
    out[#out + 1] = f[2] or '0'
    out[#out + 1] = f[3] or ''
    out[#out + 1] = f[4] or ''
    out[#out + 1] = f[5] or ''
  end
end
local cursor = {}
if seen == limit then
  cursor = last
end
return { cursor, out }
