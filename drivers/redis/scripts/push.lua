-- Pushes a batch of jobs, each with its unique claim, in one atomic step. On its own (no
-- lib/ pieces, no closures): it is the hottest script and every allocation shows.
--
-- KEYS: per queue its `pending` and `seq` (queue i at 2i-1 and 2i), then the claim keys,
-- then the queue registry if there is a key left. ARGV: the number of queues, their names,
-- then per job: queue number, when it is available ('' now, `+<ms>` after a delay,
-- `<ms>` a Unix time), name, payload, the KEYS index of its claim (`0`: none), and for a
-- claim its key and until when it holds it.
--
-- A job is stored as lib/head.lua says. A job whose key is held, by a stored job or by an
-- earlier job of the batch, is not stored. Returns per job its sequence number (created:
-- the driver makes the id `<queue>/<number>` of it) or the id of the job holding its key.
local queue_count = tonumber(ARGV[1])

-- Which jobs are created (`out[j]` true), counted per queue (by its number as written).
local at, out, counts = {}, {}, {}
local claimed, dup_of, ids
local A, j, claims = 2 + queue_count, 0, 0
while A <= #ARGV do
  j = j + 1
  at[j] = A
  out[j] = true
  if ARGV[A + 4] == '0' then
    A = A + 5
  else
    local claim = KEYS[tonumber(ARGV[A + 4])]
    claims = claims + 1
    claimed, dup_of, ids = claimed or {}, dup_of or {}, ids or {}
    if claimed[claim] then
      out[j], dup_of[j] = false, claimed[claim]
    else
      local holder = redis.call('GET', claim)
      if holder then
        out[j] = holder
      else
        claimed[claim] = j
      end
    end
    A = A + 7
  end
  if out[j] == true then
    local q = ARGV[at[j]]
    counts[q] = (counts[q] or 0) + 1
  end
end

local registry = #KEYS > 2 * queue_count + claims and KEYS[#KEYS] or nil

-- One INCRBY per queue reserves the ids of the whole batch.
local next_id, bases, entries = {}, {}, {}
for q, n in pairs(counts) do
  local i = tonumber(q)
  next_id[q] = redis.call('INCRBY', KEYS[2 * i], n) - n
  bases[q] = string.sub(KEYS[2 * i - 1], 1, -8)
  entries[q] = {}
end

local now, now_text
for j, o in ipairs(at) do
  if out[j] == true then
    local q = ARGV[o]
    local n = next_id[q] + 1
    next_id[q] = n
    local member = string.format('%016d', n)
    local hash = bases[q] .. 'job:' .. member
    if ARGV[o + 4] == '0' then
      redis.call('HSET', hash, 'n', ARGV[o + 2], 'p', ARGV[o + 3], 'a', '0')
    else
      ids[j] = ARGV[1 + tonumber(q)] .. '/' .. string.format('%d', n)
      redis.call('HSET', hash, 'n', ARGV[o + 2], 'p', ARGV[o + 3], 'a', '0',
        'u', ARGV[o + 5], 'w', ARGV[o + 6])
      redis.call('SET', KEYS[tonumber(ARGV[o + 4])], ids[j])
    end
    local when = ARGV[o + 1]
    if when == '' or string.byte(when) == 43 then -- now, or '+': after a delay
      if now == nil then
        local t = redis.call('TIME')
        now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
        now_text = string.format('%d', now)
      end
      if when == '' then
        when = now_text
      else
        when = string.format('%d', now + tonumber(string.sub(when, 2)))
      end
    end
    local e = entries[q]
    e[#e + 1] = when
    e[#e + 1] = member
    out[j] = n
  end
end
if dup_of then
  for j, earlier in pairs(dup_of) do
    out[j] = ids[earlier]
  end
end

-- One ZADD per 1,000 jobs of a queue (Lua's unpack fails near 8,000 values), the queue's
-- name into the registry, and a wake-up for its idle workers (pcall: a user whose ACL
-- forbids the channel still pushes; its workers poll instead).
for q, e in pairs(entries) do
  local i = tonumber(q)
  for k = 1, #e, 2000 do
    redis.call('ZADD', KEYS[2 * i - 1], unpack(e, k, math.min(k + 1999, #e)))
  end
  if registry then
    redis.call('SADD', registry, ARGV[1 + i])
  end
  redis.pcall('PUBLISH', bases[q] .. 'notify', counts[q])
end
return out
