-- Finds one job by its member and, when asked, cancels it: one atomic step (after
-- lib/head.lua), so a cancel never races a reservation.
--
-- ARGV after the head naming the job's one queue: the member, then '' to only look, or
-- the time in milliseconds a cancel mark is kept (at least 1) to cancel, or that time
-- after an `m` to mark only: a job reserved under a live lease is marked, any other only
-- looked at (a cancel with effects then removes it with the settle script's `x` entry).
--
-- The job's state: reserved while it is in `reserved` (due at its lease deadline), else
-- delayed while its score in `pending` (its available time) is after the server's time,
-- else waiting (due at its available time). A job whose hash is gone is not found.
--
-- Cancelling removes a job that is in `pending`, or in `reserved` with a deadline that has
-- passed (its hash deleted, its entry removed, its claim released if it still holds it,
-- as `clear` does), and returns `r`; a job reserved under a live lease gets the record
-- `<queue base>record:<member>:cancel` (empty, `PX` the time given), which the extend
-- script reports, and returns `m`. Looking returns `j`.
--
-- Returns {} when the job is not found, else { what was done (`j`, `r`, `m`), the state as
-- it was (`w`, `d`, `r`), the due time (Unix ms), name, attempts, unique key (nil: none),
-- the payload }.
local q = queues[1]
local member, mark = arg(), arg()
local only = string.sub(mark, 1, 1) == 'm'
if only then
  mark = string.sub(mark, 2)
end
local hash = q.base .. 'job:' .. member
local f = redis.call('HMGET', hash, 'n', 'a', 'u', 'w', 'p')
if not f[1] and not f[2] then
  return {}
end
local state, due
local deadline = redis.call('ZSCORE', q.reserved, member)
if deadline then
  state, due = 'r', tonumber(deadline)
else
  local at = redis.call('ZSCORE', q.pending, member)
  if not at then
    return {}
  end
  due = tonumber(at)
  if due > now() then
    state = 'd'
  else
    state = 'w'
  end
end
local unique = false
if f[4] and f[4] ~= '' then
  unique = f[3] or false
end
local done = 'j'
local payload = f[5] or ''
if mark ~= '' then
  if state == 'r' and due > now() then
    redis.call('SET', q.base .. 'record:' .. member .. ':cancel', '', 'PX', mark)
    done = 'm'
  elseif not only then
    if state == 'r' then
      redis.call('ZREM', q.reserved, member)
    else
      redis.call('ZREM', q.pending, member)
    end
    redis.call('DEL', hash)
    if f[3] then
      release_claim(f[3], job_id(q, member))
    end
    done = 'r'
  end
end
return { done, state, due, f[1] or '', tonumber(f[2]) or 0, unique, payload }
