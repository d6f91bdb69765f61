-- Settles reserved jobs, each with its outcome and effects, then reserves the next jobs
-- when asked: one atomic step, one round trip (after lib/head.lua, lib/push.lua and
-- lib/reserve.lua). A plain reservation is this script with no settlement.
--
-- ARGV after the head: the reference of the failed store's id counter key (`0` when no
-- settlement fails; its index is the next key), the number of settlements, then each
-- settlement: a plain acknowledge as `a`, queue number, member, token; any other as its
-- outcome (`A` acknowledge, `r` retry, `l` release, `f` fail), queue number, member, token,
-- its value (the delay in milliseconds for `r` and `l`, the reason for `f`, '' for `A`),
-- the number of effects, then each effect: `p` and a job as `read_job` reads it, or `c`,
-- the reference of the group's key, the number of counters, then name and delta per
-- counter. Then the fetch: the number of queues (0: none), their queue numbers in priority
-- order, the lease in milliseconds, the limit, the token prefix, and to take only jobs of
-- one name, that name and how many due jobs to look at, at most.
--
-- A settlement whose token is not the job's current one changes nothing, its effects
-- included (0 in the reply); otherwise its counters, outcome and pushes are applied
-- together (1). A counter that cannot be added to (it holds no integer, or the sum would
-- overflow) puts back the counters of its settlement and fails the call with an error, the
-- settlements before it applied: a replay finds those stale.
--
-- Returns { one 0 or 1 per settlement, the reserved jobs as `reserve` returns them }.
local failed_seq, failed_index
if ARGV[A] ~= '0' then
  failed_seq = key(ARGV[A])
  failed_index = key(tonumber(ARGV[A]) + 1)
end
A = A + 1
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

-- Acknowledges job `member` of `q` (its hash `hash`, holding the claim on `key`).
local function ack(q, hash, member, key)
  gone[hash] = true
  dels[#dels + 1] = hash
  local z = zrems[q]
  if z == nil then
    z = {}
    zrems[q] = z
  end
  z[#z + 1] = member
  if key then
    release_claim(key, job_id(q, member))
  end
end

-- Any settlement but a plain acknowledge: reads its `effects` from ARGV and applies it.
-- Returns 1, 0 if the lease is stale, or an error message (its counters put back, nothing
-- of it applied). Its helpers live inside it, so the plain path never builds them.
local function apply(q, hash, member, token, outcome, value, effects)
  local pushes, counts = {}, {}
  for _ = 1, effects do
    if arg() == 'p' then
      pushes[#pushes + 1] = read_job()
    else
      local c = { key = key(arg()), names = {}, deltas = {} }
      for d = 1, num() do
        c.names[d], c.deltas[d] = arg(), arg()
      end
      counts[#counts + 1] = c
    end
  end
  local f = redis.call('HMGET', hash, 't', 'u', 'w')
  if gone[hash] or f[1] ~= token or (outcome == 'f' and not failed_seq) then
    return 0
  end

  -- The counters first: a failure puts back what this settlement added.
  local before = {}
  local function put_back()
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
      put_back()
      return old.err
    end
    before[#before + 1] = { key = c.key, names = c.names, old = old }
    for i, name in ipairs(c.names) do
      local r = redis.pcall('HINCRBY', c.key, name, c.deltas[i])
      if type(r) == 'table' and r.err then
        put_back()
        return 'group counter ' .. name .. ': ' .. r.err
      end
    end
  end

  if outcome == 'A' then
    ack(q, hash, member, f[2])
  elseif outcome == 'r' or outcome == 'l' then
    redis.call('ZREM', q.reserved, member)
    redis.call('HDEL', hash, 't')
    if outcome == 'l' and (tonumber(redis.call('HGET', hash, 'a')) or 0) > 0 then
      redis.call('HINCRBY', hash, 'a', -1)
    end
    redis.call('ZADD', q.pending, now() + tonumber(value), member)
    q.woken = q.woken + 1
  else
    local id = job_id(q, member)
    local job = redis.call('HMGET', hash, 'n', 'p', 'a')
    local failed = string.format('%016d', redis.call('INCR', failed_seq))
    local record = string.sub(failed_index, 1, -6) .. 'job:' .. failed
    redis.call('HSET', record, 'j', id, 'q', q.name, 'n', job[1] or '', 'p', job[2] or '',
      'e', value, 'a', job[3] or '0', 'f', now())
    if f[2] then
      -- The claim goes with the job: a failed job holding it keeps it under its id.
      redis.call('HSET', record, 'u', f[2], 'w', f[3] or 'terminal')
      if f[3] ~= 'succeeded' then
        release_claim(f[2], id)
      end
    end
    redis.call('ZADD', failed_index, now(), failed)
    redis.call('DEL', hash)
    redis.call('ZREM', q.reserved, member)
  end
  if #pushes > 0 then
    push_jobs(pushes)
  end
  return 1
end

local settled = {}
for s = 1, num() do
  if ARGV[A] == 'a' then
    -- The hot path, a plain acknowledge, kept short.
    local q, member, token = queue_of[ARGV[A + 1]], ARGV[A + 2], ARGV[A + 3]
    A = A + 4
    local hash = q.base .. 'job:' .. member
    -- Only a token ending in `c` (see lib/reserve.lua) has a claim to release.
    local current, unique
    if string.byte(token, -1) == 99 then
      local f = redis.call('HMGET', hash, 't', 'u')
      current, unique = f[1], f[2]
    else
      current = redis.call('HGET', hash, 't')
    end
    if current == token and not gone[hash] then
      ack(q, hash, member, unique)
      settled[s] = 1
    else
      settled[s] = 0
    end
  else
    local outcome, q, member, token = ARGV[A], queue_of[ARGV[A + 1]], ARGV[A + 2], ARGV[A + 3]
    local value, effects = ARGV[A + 4], tonumber(ARGV[A + 5])
    A = A + 6
    local hash = q.base .. 'job:' .. member
    local result = apply(q, hash, member, token, outcome, value, effects)
    if type(result) == 'string' then
      flush()
      return redis.error_reply(result)
    end
    settled[s] = result
  end
end
flush()

local reserved = {}
local n = num()
if n > 0 then
  local list = {}
  for i = 1, n do
    list[i] = queue_of[arg()]
  end
  local lease, limit, prefix = num(), num(), arg()
  reserved = reserve(list, lease, limit, prefix, ARGV[A], tonumber(ARGV[A + 1]))
end
return { settled, reserved }
