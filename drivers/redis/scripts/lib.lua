-- The prelude of the scripts that push, settle, reserve, clear or release claims:
-- `scripts.rs` puts it in front of each of them, so everything here is local to one call.
--
-- Every such script starts its ARGV with the same head, read by `head()`:
--   the claim prefix (`{P}:claim:`; '' where claims are off, on Redis Cluster),
--   the KEYS index of the queue registry (0: none),
--   the number of queues, then per queue its name and the KEYS index of its `pending`
--   key, which its `reserved` and `seq` keys follow.
-- The rest of ARGV is the script's own, read in order with `arg()` and `num()`.
--
-- A job is the hash `<queue base>job:<member>`: n name, p payload, a attempts, t token while
-- reserved, and for a job with a unique claim u its key and w until when it holds it
-- (`started`, `succeeded`, `terminal`). A member is the queue's sequence number zero-padded
-- to 16 digits, so members with the same score sort in push order. A claim is the string
-- `<claim prefix><key>` holding the id (`<queue>/<number>`) of the job that holds it; a
-- failed job holds its claim under the id it had in its queue.
--
-- Claims released by a transition (acknowledge, fail, reserve, clear, the failed store)
-- are found through the job's `u` field, so their keys are built here, not declared in
-- KEYS: fine on one server, which is the only place claims are on.

local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)

local A = 1
local function arg()
  local v = ARGV[A]
  A = A + 1
  return v
end
local function num()
  return tonumber(arg())
end

local claim_prefix, registry, queues = '', nil, {}
local function head()
  claim_prefix = arg()
  registry = KEYS[num()]
  for i = 1, num() do
    local name = arg()
    local k = num()
    queues[i] = {
      name = name, pending = KEYS[k], reserved = KEYS[k + 1], seq = KEYS[k + 2],
      base = string.sub(KEYS[k], 1, -8), woken = 0,
    }
  end
end

-- The public id of a member of queue `q`: `<queue>/<number without padding>`.
local function job_id(q, member)
  local n = string.gsub(member, '^0+', '')
  if n == '' then
    n = '0'
  end
  return q.name .. '/' .. n
end

-- Releases the claim on `key` if the job `holder` (an id) holds it.
local function release_claim(key, holder)
  if key and claim_prefix ~= '' then
    local claim = claim_prefix .. key
    if redis.call('GET', claim) == holder then
      redis.call('DEL', claim)
    end
  end
end

-- Calls `command key ...` with the values of `list`, at most 1,000 entries of `width`
-- values per call: Lua's unpack fails near 8,000 values.
local function batched(command, key, list, width)
  local step = 1000 * width
  for i = 1, #list, step do
    redis.call(command, key, unpack(list, i, math.min(i + step - 1, #list)))
  end
end

-- Reads one job as the driver writes it into ARGV: queue number, `r` (relative) or `a`
-- (absolute), milliseconds (the delay, or the Unix time), name, payload, the KEYS index of
-- its claim (0: none), then for a claim its key and until when it holds it (`hold`).
local function read_job()
  local job = { q = queues[num()] }
  local kind, ms = arg(), num()
  job.at = ms
  if kind == 'r' then
    job.at = now + ms
  end
  job.name, job.payload = arg(), arg()
  job.claim = KEYS[num()]
  if job.claim then
    job.key, job.hold = arg(), arg()
  end
  return job
end

-- Pushes jobs (as `read_job` makes them) in order, each with its claim: a job whose key is
-- held, by a stored job or by an earlier job of the list, is not stored. Returns per job
-- its sequence number (created) or the id of the job holding its key (a duplicate).
local function push_jobs(jobs)
  local out, dup_of, first, counts = {}, {}, {}, {}
  for j, job in ipairs(jobs) do
    if job.claim then
      if first[job.claim] then
        dup_of[j] = first[job.claim]
      else
        local holder = redis.call('GET', job.claim)
        if holder then
          out[j] = holder
        else
          first[job.claim] = j
        end
      end
    end
    if out[j] == nil and dup_of[j] == nil then
      counts[job.q] = (counts[job.q] or 0) + 1
    end
  end
  -- One INCRBY per queue reserves the ids of the whole batch.
  local next_id = {}
  for q, n in pairs(counts) do
    next_id[q] = redis.call('INCRBY', q.seq, n) - n
  end
  local entries, ids = {}, {}
  for j, job in ipairs(jobs) do
    if out[j] == nil and dup_of[j] == nil then
      local q = job.q
      next_id[q] = next_id[q] + 1
      local member = string.format('%016d', next_id[q])
      local hash = q.base .. 'job:' .. member
      if job.claim then
        ids[j] = job_id(q, member)
        redis.call('HSET', hash, 'n', job.name, 'p', job.payload, 'a', 0, 'u', job.key, 'w', job.hold)
        redis.call('SET', job.claim, ids[j])
      else
        redis.call('HSET', hash, 'n', job.name, 'p', job.payload, 'a', 0)
      end
      local e = entries[q]
      if e == nil then
        e = {}
        entries[q] = e
      end
      e[#e + 1] = job.at
      e[#e + 1] = member
      out[j] = next_id[q]
    end
  end
  for j, earlier in pairs(dup_of) do
    out[j] = ids[earlier]
  end
  local names = {}
  for q, e in pairs(entries) do
    batched('ZADD', q.pending, e, 2)
    q.woken = q.woken + #e / 2
    names[#names + 1] = q.name
  end
  if registry and #names > 0 then
    redis.call('SADD', registry, unpack(names))
  end
  return out
end

-- Wakes idle workers of the queues that have new available jobs (they compute the next due
-- time themselves, so a delayed job needs the wake-up as much as an immediate one). pcall:
-- a user whose ACL forbids the channel still works; its workers poll instead.
local function publish()
  for _, q in ipairs(queues) do
    if q.woken > 0 then
      redis.pcall('PUBLISH', q.base .. 'notify', q.woken)
    end
  end
end

-- Reserves up to `limit` available jobs from `list` (queues in strict priority order) for
-- `lease` milliseconds. Available: in `pending` with a score (available time) <= now, or in
-- `reserved` with a score (lease deadline) <= now (an expired reservation, its attempt
-- already counted); the two are merged by (time, member), so a queue stays first-in
-- first-out by available time. Each job taken moves to `reserved` scored by its deadline,
-- gets attempts + 1, a fresh token (`prefix` and a counter), and releases a claim held
-- until it started. With `by_name`, only jobs named `name` are taken, looking at no more
-- than `scan` due entries per set. Returns six values per job: the position of its queue in
-- `list`, member, name, payload, attempts, token.
local function reserve(list, lease, limit, prefix, by_name, name, scan)
  local deadline = now + lease
  local out = {}
  local taken = 0

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

  for position, q in ipairs(list) do
    if taken >= limit then
      break
    end
    local want = limit - taken
    local a = due(q.pending, q.base, want)
    local b = due(q.reserved, q.base, want)
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
      local hash = q.base .. 'job:' .. member
      local f = redis.call('HMGET', hash, 'n', 'p', 'a', 'u', 'w')
      if f[2] == false then
        -- The job's hash is gone (deleted by hand): drop the dangling entry.
        redis.call('ZREM', q.reserved, member)
      else
        taken = taken + 1
        local token = prefix .. taken
        local attempts = (tonumber(f[3]) or 0) + 1
        redis.call('HSET', hash, 'a', attempts, 't', token)
        if f[5] == 'started' then
          release_claim(f[4], job_id(q, member))
        end
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

-- The rank in sorted set `key` of the first entry after the cursor (`score`, `member`) in
-- the set's order (by score then member; `rev`: both descending), for cursor paging. The
-- cursor's own entry gives it at once; if that entry left or moved since, the count of
-- entries before the cursor's score plus those of the same score (jobs of the same
-- millisecond) that come before its member.
local function rank_after(key, score, member, rev)
  local s = redis.call('ZSCORE', key, member)
  if s and tonumber(s) == score then
    if rev then
      return redis.call('ZREVRANK', key, member) + 1
    end
    return redis.call('ZRANK', key, member) + 1
  end
  local rank
  if rev then
    rank = redis.call('ZCOUNT', key, '(' .. score, '+inf')
  else
    rank = redis.call('ZCOUNT', key, '-inf', '(' .. score)
  end
  local offset = 0
  while true do
    local group
    if rev then
      group = redis.call('ZREVRANGEBYSCORE', key, score, score, 'LIMIT', offset, 500)
    else
      group = redis.call('ZRANGEBYSCORE', key, score, score, 'LIMIT', offset, 500)
    end
    for _, m in ipairs(group) do
      if (rev and m < member) or (not rev and m > member) then
        return rank
      end
      rank = rank + 1
    end
    if #group < 500 then
      return rank
    end
    offset = offset + 500
  end
end
