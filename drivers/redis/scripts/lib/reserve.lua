-- Reserving jobs (after head.lua).

-- The first `want` due entries (score <= `time`) of sorted set `key` of queue `q`, as
-- ZRANGEBYSCORE WITHSCORES gives them: member, score (as text: converted only when
-- compared), member, score... With `name`, only jobs of that name count, looking at no more
-- than `scan` due entries.
local function due(q, key, time, want, name, scan)
  if name == nil then
    return redis.call('ZRANGEBYSCORE', key, '-inf', time, 'WITHSCORES', 'LIMIT', 0, want)
  end
  local found = {}
  local offset = 0
  while #found < 2 * want and offset < scan do
    local chunk = math.min(200, scan - offset)
    local r = redis.call('ZRANGEBYSCORE', key, '-inf', time, 'WITHSCORES', 'LIMIT', offset, chunk)
    for i = 1, #r, 2 do
      if #found < 2 * want and redis.call('HGET', q.base .. 'job:' .. r[i], 'n') == name then
        found[#found + 1] = r[i]
        found[#found + 1] = r[i + 1]
      end
    end
    if #r < 2 * chunk then
      break
    end
    offset = offset + chunk
  end
  return found
end

-- Reserves up to `limit` available jobs from `list` (queues in strict priority order) for
-- `lease` milliseconds. Available: in `pending` with a score (available time) <= now, or in
-- `reserved` with a score (lease deadline) <= now (an expired reservation, its attempt
-- already counted); the two are merged by (time, member), so a queue stays first-in
-- first-out by available time. Each job taken moves to `reserved` scored by its deadline,
-- gets attempts + 1, a fresh token (`prefix` and a counter, and `c` for a job that holds a
-- claim, so that its acknowledge knows to release it without reading the job first), and
-- releases a claim held until it started. With `name`, only jobs of that name are taken, looking at no more than
-- `scan` due entries per set. Returns six values per job: the position of its queue in
-- `list`, member, name, payload, attempts, token.
local function reserve(list, lease, limit, prefix, name, scan)
  local time = now()
  local deadline = string.format('%d', time + lease)
  local out = {}
  local taken = 0
  for position, q in ipairs(list) do
    if taken >= limit then
      break
    end
    local want = limit - taken
    local a = due(q, q.pending, time, want, name, scan)
    local b = due(q, q.reserved, time, want, name, scan)
    local i, j = 1, 1
    local from_pending, leased = {}, {}
    while taken < limit and (i <= #a or j <= #b) do
      local member
      local from_a = j > #b
      if not from_a and i <= #a then
        local sa, sb = tonumber(a[i + 1]), tonumber(b[j + 1])
        from_a = sa < sb or (sa == sb and a[i] < b[j])
      end
      if from_a then
        member = a[i]
        i = i + 2
        from_pending[#from_pending + 1] = member
      else
        member = b[j]
        j = j + 2
      end
      local hash = q.base .. 'job:' .. member
      local f = redis.call('HMGET', hash, 'n', 'p', 'a', 'u', 'w')
      if f[2] == false then
        -- The job's hash is gone (deleted by hand): drop the dangling entry.
        redis.call('ZREM', q.reserved, member)
      else
        taken = taken + 1
        local token
        if f[4] == false then
          token = string.format('%s%d', prefix, taken)
        elseif f[5] == 'started' then
          token = string.format('%s%d', prefix, taken)
          release_claim(f[4], job_id(q, member))
        else
          token = string.format('%s%dc', prefix, taken)
        end
        local attempts = (tonumber(f[3]) or 0) + 1
        redis.call('HSET', hash, 'a', string.format('%d', attempts), 't', token)
        leased[#leased + 1] = deadline
        leased[#leased + 1] = member
        out[#out + 1] = position
        out[#out + 1] = member
        out[#out + 1] = f[1] or ''
        out[#out + 1] = f[2]
        out[#out + 1] = attempts
        out[#out + 1] = token
      end
    end
    batched('ZREM', q.pending, from_pending, 1)
    batched('ZADD', q.reserved, leased, 2)
  end
  return out
end
