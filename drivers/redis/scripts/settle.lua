-- Settles reserved jobs, each with its outcome and effects, then reserves the next jobs
-- when asked: one atomic step, one round trip (after lib.lua). A plain reservation is this
-- script with no settlement.
--
-- ARGV: the head (see lib.lua); the KEYS index of the failed store's id counter (0 when no
-- settlement fails; its index follows it in KEYS); the number of settlements, then per
-- settlement: queue number, member, token, outcome (`a` acknowledge, `r` retry, `l`
-- release, `f` fail), its value (the delay in milliseconds for `r` and `l`, the reason for
-- `f`, '' for `a`), the number of effects, then each effect: `p` and a job as `read_job`
-- reads it, or `c`, the KEYS index of the group's hash, the number of counters, then name
-- and delta per counter. Then the fetch: the number of queues (0: none), their queue
-- numbers in priority order, the lease in milliseconds, the limit, the token prefix, `1`
-- to take only jobs named by the next value, that name, and the scan limit by name.
--
-- A settlement whose token is not the job's current one changes nothing, its effects
-- included (0 in the reply); otherwise its counters, outcome and pushes are applied
-- together (1). A counter that cannot be added to (it holds no integer, or the sum would
-- overflow) puts back the counters of its settlement and fails the call with an error, the
-- settlements before it applied: a replay finds those stale.
--
-- Returns { one 0 or 1 per settlement, the reserved jobs as `reserve` returns them }.
head()
local k = num()
local failed_seq, failed_index = KEYS[k], KEYS[k + 1]

-- Acknowledged jobs are deleted at the end, one DEL and one ZREM per queue for the whole
-- batch; `gone` makes a second settlement of the same lease in the call stale meanwhile.
local gone, dels, zrems = {}, {}, {}
local function flush()
  for i = 1, #dels, 1000 do
    redis.call('DEL', unpack(dels, i, math.min(i + 999, #dels)))
  end
  for q, members in pairs(zrems) do
    batched('ZREM', q.reserved, members, 1)
  end
  dels, zrems = {}, {}
  publish()
end

-- Adds the counters of one settlement; on a failure, puts back what it added and returns
-- the error.
local function add_counts(counts)
  local before = {}
  local function undo()
    for _, b in ipairs(before) do
      for i, name in ipairs(b.names) do
        if b.old[i] then
          redis.call('HSET', b.key, name, b.old[i])
        else
          redis.call('HDEL', b.key, name)
        end
      end
    end
  end
  for _, c in ipairs(counts) do
    local old = redis.pcall('HMGET', c.key, unpack(c.names))
    if old.err then
      undo()
      return old.err
    end
    before[#before + 1] = { key = c.key, names = c.names, old = old }
    for i, name in ipairs(c.names) do
      local r = redis.pcall('HINCRBY', c.key, name, c.deltas[i])
      if type(r) == 'table' and r.err then
        undo()
        return 'group counter ' .. name .. ': ' .. r.err
      end
    end
  end
  return nil
end

local settled = {}
for s = 1, num() do
  local q = queues[num()]
  local member, token, outcome, value = arg(), arg(), arg(), arg()
  local pushes, counts = {}, {}
  for _ = 1, num() do
    if arg() == 'p' then
      pushes[#pushes + 1] = read_job()
    else
      local c = { key = KEYS[num()], names = {}, deltas = {} }
      for d = 1, num() do
        c.names[d], c.deltas[d] = arg(), arg()
      end
      counts[#counts + 1] = c
    end
  end
  local hash = q.base .. 'job:' .. member
  local f = redis.call('HMGET', hash, 't', 'u', 'w')
  if gone[hash] or f[1] ~= token or (outcome == 'f' and not failed_seq) then
    settled[s] = 0
  else
    local err = add_counts(counts)
    if err then
      flush()
      return redis.error_reply(err)
    end
    local id = job_id(q, member)
    if outcome == 'a' then
      gone[hash] = true
      dels[#dels + 1] = hash
      local z = zrems[q]
      if z == nil then
        z = {}
        zrems[q] = z
      end
      z[#z + 1] = member
      release_claim(f[2], id)
    elseif outcome == 'r' or outcome == 'l' then
      redis.call('ZREM', q.reserved, member)
      redis.call('HDEL', hash, 't')
      if outcome == 'l' and (tonumber(redis.call('HGET', hash, 'a')) or 0) > 0 then
        redis.call('HINCRBY', hash, 'a', -1)
      end
      redis.call('ZADD', q.pending, now + tonumber(value), member)
      q.woken = q.woken + 1
    else
      local job = redis.call('HMGET', hash, 'n', 'p', 'a')
      local failed = string.format('%016d', redis.call('INCR', failed_seq))
      local record = string.sub(failed_index, 1, -6) .. 'job:' .. failed
      redis.call('HSET', record, 'j', id, 'q', q.name, 'n', job[1] or '', 'p', job[2] or '',
        'e', value, 'a', job[3] or '0', 'f', now)
      if f[2] then
        -- The claim goes with the job: a failed job holding it keeps it under its id.
        redis.call('HSET', record, 'u', f[2], 'w', f[3] or 'terminal')
        if f[3] ~= 'succeeded' then
          release_claim(f[2], id)
        end
      end
      redis.call('ZADD', failed_index, now, failed)
      redis.call('DEL', hash)
      redis.call('ZREM', q.reserved, member)
    end
    push_jobs(pushes)
    settled[s] = 1
  end
end
flush()

local reserved = {}
local n = num()
if n > 0 then
  local list = {}
  for i = 1, n do
    list[i] = queues[num()]
  end
  local lease, limit, prefix = num(), num(), arg()
  local by_name, name, scan = arg() == '1', arg(), num()
  reserved = reserve(list, lease, limit, prefix, by_name, name, scan)
end
return { settled, reserved }
