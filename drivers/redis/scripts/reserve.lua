-- Reserves up to `limit` available jobs across queues in strict priority order.
--
-- KEYS, two per queue in priority order: the queue's `pending` and `reserved` sorted sets.
-- ARGV[1] lease in milliseconds, ARGV[2] limit, ARGV[3] token prefix (random per call),
-- ARGV[4] '1' to take only jobs named ARGV[5], ARGV[6] how many due entries per set a
-- by-name reservation looks at, at most.
--
-- Available: in `pending` with a score (available time) <= now, or in `reserved` with a
-- score (lease deadline) <= now (an expired reservation, its attempt already counted). The
-- two are merged by (time, member) so a queue stays first-in first-out by available time.
-- Each job taken moves to `reserved` scored by its new deadline, gets attempts + 1 and a
-- fresh token. Set updates are batched per queue (one ZREM, one ZADD). Returns six values per job: queue index, member, name, payload, attempts,
-- token.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local deadline = now + tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local by_name = ARGV[4] == '1'
local name = ARGV[5]
local scan = tonumber(ARGV[6])

-- The first `want` due entries of a sorted set as {score, member}.
local function due(key, base, want)
  local found = {}
  if not by_name then
    local r = redis.call('ZRANGEBYSCORE', key, '-inf', now, 'WITHSCORES', 'LIMIT', 0, want)
    for i = 1, #r, 2 do
      found[#found + 1] = { tonumber(r[i + 1]), r[i] }
    end
    return found
  end
  local offset = 0
  while #found < want and offset < scan do
    local chunk = math.min(200, scan - offset)
    local r = redis.call('ZRANGEBYSCORE', key, '-inf', now, 'WITHSCORES', 'LIMIT', offset, chunk)
    for i = 1, #r, 2 do
      if #found < want and redis.call('HGET', base .. 'job:' .. r[i], 'n') == name then
        found[#found + 1] = { tonumber(r[i + 1]), r[i] }
      end
    end
    if #r < 2 * chunk then
      break
    end
    offset = offset + chunk
  end
  return found
end

-- Calls `command key ...` with the values of `list`, at most 1,000 entries of `width`
-- values per call: Lua's unpack fails near 8,000 values.
local function batched(command, key, list, width)
  local step = 1000 * width
  for i = 1, #list, step do
    redis.call(command, key, unpack(list, i, math.min(i + step - 1, #list)))
  end
end

local out = {}
local taken = 0
for q = 1, #KEYS / 2 do
  if taken >= limit then
    break
  end
  local pending = KEYS[2 * q - 1]
  local reserved = KEYS[2 * q]
  local base = string.sub(pending, 1, -8)
  local want = limit - taken
  local a = due(pending, base, want)
  local b = due(reserved, base, want)
  local i, j = 1, 1
  local from_pending, leased = {}, {}
  while taken < limit and (i <= #a or j <= #b) do
    local member
    if j > #b or (i <= #a and (a[i][1] < b[j][1] or (a[i][1] == b[j][1] and a[i][2] < b[j][2]))) then
      member = a[i][2]
      i = i + 1
      from_pending[#from_pending + 1] = member
    else
      member = b[j][2]
      j = j + 1
    end
    local job = base .. 'job:' .. member
    local fields = redis.call('HMGET', job, 'n', 'p', 'a')
    if fields[2] == false then
      -- The job's hash is gone (deleted by hand): drop the dangling entry.
      redis.call('ZREM', reserved, member)
    else
      taken = taken + 1
      local token = ARGV[3] .. taken
      local attempts = (tonumber(fields[3]) or 0) + 1
      redis.call('HSET', job, 'a', attempts, 't', token)
      leased[#leased + 1] = deadline
      leased[#leased + 1] = member
      out[#out + 1] = q
      out[#out + 1] = member
      out[#out + 1] = fields[1] or ''
      out[#out + 1] = fields[2]
      out[#out + 1] = attempts
      out[#out + 1] = token
    end
  end
  batched('ZREM', pending, from_pending, 1)
  batched('ZADD', reserved, leased, 2)
end
return out
