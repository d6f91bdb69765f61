-- Pushes a batch of jobs, each with its unique claim, in one atomic step. On its own (no
-- lib/ pieces, no closures): it is the hottest script and every allocation shows.
--
-- KEYS: per queue its `pending` and `seq` (queue i at 2i-1 and 2i), then the claim keys,
-- then the queue registry if there is a key left. ARGV: the number of queues, their names,
-- then per job: queue number, when it is available ('' now, `+<ms>` after a delay,
-- `<ms>` a Unix time), name, payload, the KEYS index of its claim (`0`: none; negative:
-- the claim replaces a queued holder), and for a claim its key and until when it holds it.
--
-- A job is stored as lib/head.lua says. A job whose key is held, by a stored job or by an
-- earlier job of the batch, is not stored. With `replace` (a negative claim index), a
-- holder that is queued takes the job's name, payload and availability instead, keeping its
-- id, queue, attempts and claim: a stored holder if it is in its queue's `pending` (not
-- reserved, not in the failed store), its queue found from the id `<queue>/<number>` the
-- claim holds (any queue, named in this call or not: its keys are built from the claim
-- key's `{P` and its queue's name, one server only, where claims are on), rescored there
-- and its queue woken; an earlier job of the batch by being created with the last such
-- job's name, payload and availability. Returns per job its sequence number (created: the
-- driver makes the id `<queue>/<number>` of it), the id of the job holding its key (a
-- duplicate), or that id in a table of one (replaced).
local queue_count = tonumber(ARGV[1])

-- Which jobs are created (`out[j]` true), counted per queue (by its number as written).
-- Made only for a batch that needs them: the claim tables (`dup_of[j]`, `rep_of[j]`: the
-- earlier job of the batch job j is a duplicate of, or replaces), and for replacing
-- `from[j]` (the job of the batch whose name, payload and availability created job j takes)
-- and `held[j]` (the stored holder job j replaces: its queue's base, member and id).
local at, out, counts = {}, {}, {}
local claimed, dup_of, ids, from, rep_of, held
local A, j, claims = 2 + queue_count, 0, 0
while A <= #ARGV do
  j = j + 1
  at[j] = A
  out[j] = true
  if ARGV[A + 4] == '0' then
    A = A + 5
  else
    local ref = tonumber(ARGV[A + 4])
    local replace = ref < 0
    if replace then
      ref = -ref
    end
    local claim = KEYS[ref]
    claims = claims + 1
    claimed, dup_of, ids = claimed or {}, dup_of or {}, ids or {}
    local first = claimed[claim]
    if first then
      out[j] = false
      if replace then
        from, rep_of = from or {}, rep_of or {}
        from[first], rep_of[j] = j, first
      else
        dup_of[j] = first
      end
    else
      local holder = redis.call('GET', claim)
      if holder then
        out[j] = holder
        if replace then
          local queue, number = string.match(holder, '^(.*)/(%d+)$')
          if queue and #number <= 16 then
            -- `{P}:claim:<key>` less `}:claim:<key>` is `{P`; the queue's base `{P:Q}:`.
            local base = string.sub(claim, 1, -(#ARGV[A + 5] + 9)) .. ':' .. queue .. '}:'
            local member = string.rep('0', 16 - #number) .. number
            if redis.call('ZSCORE', base .. 'pending', member) then
              held = held or {}
              held[j] = { base, member, holder }
            end
          end
        end
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

-- Jobs are created, and stored holders replaced, in batch order: the last replacement wins.
-- `woken[base]` counts the replaced jobs per queue.
local now, now_text, woken
for j, o in ipairs(at) do
  local h = held and held[j]
  if out[j] == true or h then
    local d = o -- where the name, payload and availability are read
    if from and from[j] then
      d = at[from[j]]
    end
    local when = ARGV[d + 1]
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
    if h then
      local base = h[1]
      redis.call('HSET', base .. 'job:' .. h[2], 'n', ARGV[o + 2], 'p', ARGV[o + 3])
      redis.call('ZADD', base .. 'pending', when, h[2])
      woken = woken or {}
      woken[base] = (woken[base] or 0) + 1
      out[j] = { h[3] }
    else
      local q = ARGV[o]
      local n = next_id[q] + 1
      next_id[q] = n
      local member = string.format('%016d', n)
      local hash = bases[q] .. 'job:' .. member
      if ARGV[o + 4] == '0' then
        redis.call('HSET', hash, 'n', ARGV[d + 2], 'p', ARGV[d + 3], 'a', '0')
      else
        ids[j] = ARGV[1 + tonumber(q)] .. '/' .. string.format('%d', n)
        redis.call('HSET', hash, 'n', ARGV[d + 2], 'p', ARGV[d + 3], 'a', '0',
          'u', ARGV[o + 5], 'w', ARGV[o + 6])
        redis.call('SET', KEYS[math.abs(tonumber(ARGV[o + 4]))], ids[j])
      end
      local e = entries[q]
      e[#e + 1] = when
      e[#e + 1] = member
      out[j] = n
    end
  end
end
if dup_of then
  for j, earlier in pairs(dup_of) do
    out[j] = ids[earlier]
  end
end
if rep_of then
  for j, earlier in pairs(rep_of) do
    out[j] = { ids[earlier] }
  end
end

-- One ZADD per 1,000 jobs of a queue (Lua's unpack fails near 8,000 values), the queue's
-- name into the registry, and a wake-up for its idle workers (pcall: a user whose ACL
-- forbids the channel still pushes; its workers poll instead), once per queue, replaced
-- jobs counted in.
for q, e in pairs(entries) do
  local i = tonumber(q)
  for k = 1, #e, 2000 do
    redis.call('ZADD', KEYS[2 * i - 1], unpack(e, k, math.min(k + 1999, #e)))
  end
  if registry then
    redis.call('SADD', registry, ARGV[1 + i])
  end
  local n = counts[q]
  if woken and woken[bases[q]] then
    n = n + woken[bases[q]]
    woken[bases[q]] = nil
  end
  redis.pcall('PUBLISH', bases[q] .. 'notify', n)
end
if woken then
  for base, n in pairs(woken) do
    redis.pcall('PUBLISH', base .. 'notify', n)
  end
end
return out
