-- Settles reserved jobs, each with its outcome and effects, and applies effects with no
-- lease (`Groups::apply`, `Groups::apply_if`), then reserves the next jobs when asked: one
-- atomic step, one round trip (after lib/head.lua, lib/push.lua and lib/reserve.lua). A
-- plain reservation is this script with no settlement.
--
-- ARGV after the head: the reference of the failed store's id counter key (`0` when no
-- settlement fails; its index is the next key); the guarded waiting keys (below): their
-- number, then the reference of each; the number of settlements, then each settlement: a
-- plain acknowledge as `a`, queue number, member, token; effects with no lease as `e` and
-- the effects, or as `g` (applied only if a group counter holds a value: `apply_if`), the
-- reference of the group's key, the counter's name, the value it must hold and the value
-- to set, both in decimal as Rust writes an i64, then the effects; any other as its
-- outcome (`A` acknowledge, `r` retry, `l` release, `f` fail, `x` cancel), queue number,
-- member, token, its value (the delay in milliseconds for `r` and `l`, the reason for `f`,
-- '' for `A` and `x`), then the effects. A cancel (`Track::cancel` with effects) has no
-- token: it applies, removing the job (hash, entry, claim) with its effects, only if the
-- job is in `pending` or in `reserved` past its lease deadline, else changes nothing (0). Effects are their number, then each:
-- `p` and a job as `read_job` reads it; `c`, the reference of the group's key, the number
-- of counters, then name and delta per counter; `h`, the reference of a waiting job's key
-- (`{P}:waiting:<key>`), its dependencies and its job as `read_job` reads it; `d`, the
-- reference of a waiting job's key and the delta of its dependencies; `s` and the reference
-- of a waiting job's key; `R` (a record of the settled job, only in a settlement), its kind,
-- its value and how long it is kept in milliseconds (0: the record is deleted, a
-- replacement already expired); `P` (the settled job's new payload, only in a retry or a
-- release) and the payload; `K` (the settled job parked on a lock, only in a retry or a
-- release; one server only), the reference of the lock's key and that of its parked set
-- (`P:parked:{K}`, see `unlock.lua`). Then the fetch: the number of queues (0: none), their queue
-- numbers in priority order, the lease in milliseconds, the limit, the token prefix, and to
-- take only jobs of one name, that name and how many due jobs to look at, at most.
--
-- A waiting job is a hash: d dependencies left, q its queue's name, v when it is available
-- once pushed (as `read_job` takes it: '' now, `+<ms>` after a delay, `<ms>` a Unix time),
-- n name, p payload, and for a claim u its key and w until when. A dependency change that
-- brings them to zero pushes the job to its queue, whose keys (and its claim's) the script
-- must be given: the driver reads the queue and the claim of the job waiting under each key
-- whose dependencies the call changes (the guarded keys) and declares them. Before changing
-- anything the script checks that the job under each guarded key, if any, still has its
-- queue and claim among the declared keys; if not (it was replaced since the driver read
-- it), it returns -1, nothing changed, and the driver reads again. A job held by the call
-- itself is declared with its `h` effect.
--
-- A settlement whose token is not the job's current one changes nothing, its effects
-- included (0 in the reply); otherwise its counters and outcome are applied together and
-- its other effects gathered (1); its records (`R`) are written with its outcome, under
-- `<queue base>record:<member>:<kind>` with a `PX` expiry (the job's slot). Effects with no lease are always applied (1), unless
-- given as `g`: then the counter is read before anything of the entry is written (the
-- driver sends a `g` entry alone, so before anything of the call is): unless it holds the
-- value given (a missing counter holds '0'), the entry changes nothing (0); if it does, it
-- is set to the new value first, then the entry is applied as an `e` one (1). Values are
-- compared as text, exact over all of i64 where Lua's numbers are not: a counter only ever
-- holds what `HINCRBY` or this script writes, canonical decimal integers. One that holds
-- something else fails the call as a counter that cannot be added to does. At the end,
-- before the fetch (which can take the jobs they push), the gathered effects of the call
-- are applied kind by kind: pushes, waiting jobs held (unless one waits under the key),
-- dependency changes (summed per key over the call, keys in order of first appearance;
-- a job whose dependencies reach zero or below is pushed as a push is, with its claim, and
-- its key freed), skips. Counters are added per settlement, before its transition: nothing
-- else reads them, so the order is the contract's all the same. A counter that cannot be
-- added to (it holds no integer, or the sum would overflow) puts back the counters of its
-- settlement and fails the call with an error (a `g` entry's counter put back too), the
-- settlements before it applied with their effects: a replay finds those stale.
-- Dependencies left saturate at +-10^15, where Lua's numbers are still exact integers.
--
-- Returns { one 0 or 1 per settlement, the reserved jobs as `reserve` returns them }, or
-- -1 (nothing changed) if a guarded key's job has undeclared keys.
local failed_seq, failed_index
if ARGV[A] ~= '0' then
  failed_seq = key(ARGV[A])
  failed_index = key(tonumber(ARGV[A]) + 1)
end
A = A + 1

-- The guard (above). `num_of` finds a declared queue's number by its name and `ref_of` a
-- declared key's reference by the key, for the jobs dependency changes release; nil when the
-- call changes no dependency (nothing to release).
local num_of, ref_of
local guarded = num()
if guarded > 0 then
  num_of, ref_of = {}, {}
  for i, q in ipairs(queues) do
    num_of[q.name] = string.format('%d', i)
  end
  local first = 3 * queue_count
  for r = 1, #KEYS - first do
    ref_of[KEYS[first + r]] = string.format('%d', r)
  end
  for _ = 1, guarded do
    local f = redis.call('HMGET', key(arg()), 'q', 'u')
    if f[1] and (not num_of[f[1]] or (f[2] and not ref_of[claim_prefix .. f[2]])) then
      return -1
    end
  end
end

-- The effects of the applied settlements (other than counters), gathered for the end of
-- the call; nil until a settlement with effects applies.
local fx

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

-- Any settlement but a plain acknowledge, or effects with no lease (`outcome` `e`, no job;
-- `cond` the condition of a `g` entry: the group's key, the counter's name, the value it
-- must hold and the value to set): reads its `effects` from ARGV and applies it. Returns 1,
-- 0 if the lease is stale or the condition does not hold, or an error message (its
-- counters put back, nothing of it applied). Its helpers live inside it, so the plain path
-- never builds them.
local function apply(q, hash, member, token, outcome, value, effects, cond)
  -- Counters are read now; any other effect is kept as its kind and the position of what
  -- follows it in ARGV, read when the call's effects are applied.
  local counts, others, recs, vals, payload, park = {}, {}, {}, {}, nil, nil
  for _ = 1, effects do
    local kind = arg()
    if kind == 'R' then
      recs[#recs + 1] = A
      A = A + 3
    elseif kind == 'P' then
      payload = arg()
    elseif kind == 'K' then
      local lock = key(arg())
      park = { lock = lock, set = key(arg()) }
    elseif kind == 'v' then
      local k = key(arg())
      local name = arg()
      vals[#vals + 1] = { k, name, arg() }
    elseif kind == 'c' then
      local c = { key = key(arg()), names = {}, deltas = {} }
      for d = 1, num() do
        c.names[d], c.deltas[d] = arg(), arg()
      end
      counts[#counts + 1] = c
    else
      others[#others + 1] = kind
      others[#others + 1] = A
      if kind == 'p' then
        read_job()
      elseif kind == 'h' then
        A = A + 2
        read_job()
      elseif kind == 'd' then
        A = A + 2
      else
        A = A + 1
      end
    end
  end
  local f
  if outcome == 'x' then
    f = redis.call('HMGET', hash, 't', 'u', 'w')
    local deadline = redis.call('ZSCORE', q.reserved, member)
    local removable
    if deadline then
      removable = tonumber(deadline) <= now()
    else
      removable = redis.call('ZSCORE', q.pending, member) ~= false
    end
    if gone[hash] or not removable then
      return 0
    end
  elseif outcome ~= 'e' then
    f = redis.call('HMGET', hash, 't', 'u', 'w')
    if gone[hash] or f[1] ~= token or (outcome == 'f' and not failed_seq) then
      return 0
    end
  end

  -- The counters first: a failure puts back what this settlement added, latest first (a
  -- counter named twice goes back to the value it had before the first).
  local before = {}
  local function put_back()
    for j = #before, 1, -1 do
      local b = before[j]
      for i = #b.names, 1, -1 do
        if b.old[i] then
          redis.call('HSET', b.key, b.names[i], b.old[i])
        else
          redis.call('HDEL', b.key, b.names[i])
        end
      end
    end
  end
  -- The condition, read before anything of the entry is written: text against text (see
  -- the top). A refusal writes nothing, so no group hash is created.
  if cond then
    local held = redis.pcall('HGET', cond.key, cond.name)
    if type(held) == 'table' and held.err then
      return 'group counter ' .. cond.name .. ': ' .. held.err
    end
    if held ~= cond.expect and (held or cond.expect ~= '0') then
      if held and held ~= '0' and not string.find(held, '^%-?[1-9]%d*$') then
        return 'group counter ' .. cond.name .. ': ERR hash value is not an integer'
      end
      return 0
    end
    before[1] = { key = cond.key, names = { cond.name }, old = { held } }
    redis.call('HSET', cond.key, cond.name, cond.set)
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
  -- Group values: a key of another type refuses the step, its counters put back (values
  -- written before by this step stay, replaced by its replay).
  for _, v in ipairs(vals) do
    local r = redis.pcall('HSET', v[1], v[2], v[3])
    if type(r) == 'table' and r.err then
      put_back()
      return 'group value ' .. v[2] .. ': ' .. r.err
    end
  end

  if outcome == 'A' then
    ack(q, hash, member, f[2])
  elseif outcome == 'x' then
    gone[hash] = true
    redis.call('ZREM', q.pending, member)
    redis.call('ZREM', q.reserved, member)
    redis.call('DEL', hash)
    if f[2] then
      release_claim(f[2], job_id(q, member))
    end
  elseif outcome == 'r' or outcome == 'l' then
    redis.call('ZREM', q.reserved, member)
    -- A park ends with any settlement; a new one starts below.
    redis.call('HDEL', hash, 't', 'k')
    if outcome == 'l' and (tonumber(redis.call('HGET', hash, 'a')) or 0) > 0 then
      redis.call('HINCRBY', hash, 'a', -1)
    end
    if payload then
      redis.call('HSET', hash, 'p', payload)
    end
    local due = now() + tonumber(value)
    if park then
      -- Parked while the lock is held (the unlock wakes it), due by the lock's expiry at the
      -- latest (a holder that died leaves it to expire); due now if it is free already.
      local ttl = redis.call('PTTL', park.lock)
      if ttl == -2 then
        due = now()
      else
        if ttl >= 0 then
          due = math.min(due, now() + ttl)
        end
        redis.call('HSET', hash, 'k', park.lock)
        redis.call('ZADD', park.set, 'NX', now(), member .. q.pending)
      end
    end
    redis.call('ZADD', q.pending, due, member)
    q.woken = q.woken + 1
  elseif outcome == 'f' then
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
  if q then
    for _, at in ipairs(recs) do
      local record = q.base .. 'record:' .. member .. ':' .. ARGV[at]
      if tonumber(ARGV[at + 2]) > 0 then
        redis.call('SET', record, ARGV[at + 1], 'PX', ARGV[at + 2])
      else
        redis.call('DEL', record)
      end
    end
  end

  -- Gathered for the end of the call. Dependency changes are summed per key as they come,
  -- saturating at +-10^15 (beyond any real count, and exact in Lua's numbers).
  if #others > 0 then
    fx = fx or { pushes = {}, holds = {}, keys = {}, sums = {}, skips = {} }
    for i = 1, #others, 2 do
      local kind, at = others[i], others[i + 1]
      if kind == 'p' then
        fx.pushes[#fx.pushes + 1] = at
      elseif kind == 'h' then
        fx.holds[#fx.holds + 1] = at
      elseif kind == 'd' then
        local k = key(ARGV[at])
        local sum = fx.sums[k]
        if sum == nil then
          fx.keys[#fx.keys + 1] = k
          sum = 0
        end
        local delta = math.max(-1e15, math.min(1e15, tonumber(ARGV[at + 1]) or 0))
        fx.sums[k] = math.max(-1e15, math.min(1e15, sum + delta))
      else
        fx.skips[#fx.skips + 1] = key(ARGV[at])
      end
    end
  end
  return 1
end

local settled, failure = {}, nil
for s = 1, num() do
  local kind = ARGV[A]
  if kind == 'a' then
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
    local result
    if kind == 'e' then
      local effects = tonumber(ARGV[A + 1])
      A = A + 2
      result = apply(nil, nil, nil, nil, 'e', nil, effects)
    elseif kind == 'g' then
      local cond = { key = key(ARGV[A + 1]), name = ARGV[A + 2], expect = ARGV[A + 3],
        set = ARGV[A + 4] }
      local effects = tonumber(ARGV[A + 5])
      A = A + 6
      result = apply(nil, nil, nil, nil, 'e', nil, effects, cond)
    else
      local q, member, token = queue_of[ARGV[A + 1]], ARGV[A + 2], ARGV[A + 3]
      local value, effects = ARGV[A + 4], tonumber(ARGV[A + 5])
      A = A + 6
      local hash = q.base .. 'job:' .. member
      result = apply(q, hash, member, token, kind, value, effects)
    end
    if type(result) == 'string' then
      -- The settlements before it stay applied, with their effects (below).
      failure = result
      break
    end
    settled[s] = result
  end
end

-- The gathered effects, kind by kind (see the top).
if fx then
  if #fx.pushes > 0 then
    push_jobs(fx.pushes)
  end
  for _, at in ipairs(fx.holds) do
    local k = key(ARGV[at])
    if redis.call('EXISTS', k) == 0 then
      local o = at + 2
      local fields = { 'd', ARGV[at + 1], 'q', queue_of[ARGV[o]].name, 'v', ARGV[o + 1],
        'n', ARGV[o + 2], 'p', ARGV[o + 3] }
      if ARGV[o + 4] ~= '0' then
        fields[11], fields[12], fields[13], fields[14] = 'u', ARGV[o + 5], 'w', ARGV[o + 6]
      end
      redis.call('HSET', k, unpack(fields))
    end
  end
  -- Released jobs, laid out as `read_job` reads them (the guard made sure their queues and
  -- claims are declared), pushed in one batch.
  local released, batch = {}, {}
  for _, k in ipairs(fx.keys) do
    local sum = fx.sums[k]
    local left = sum ~= 0 and redis.call('HGET', k, 'd')
    if left then
      left = math.max(-1e15, math.min(1e15, (tonumber(left) or 0) + sum))
      if left > 0 then
        redis.call('HSET', k, 'd', string.format('%d', left))
      else
        local w = redis.call('HMGET', k, 'q', 'v', 'n', 'p', 'u', 'w')
        redis.call('DEL', k)
        local at = #released + 1
        batch[#batch + 1] = at
        released[at], released[at + 1] = num_of[w[1]], w[2] or ''
        released[at + 2], released[at + 3] = w[3] or '', w[4] or ''
        if w[5] then
          released[at + 4] = ref_of[claim_prefix .. w[5]]
          released[at + 5], released[at + 6] = w[5], w[6] or 'terminal'
        else
          released[at + 4] = '0'
        end
      end
    end
  end
  if #batch > 0 then
    push_jobs(batch, released)
  end
  for _, k in ipairs(fx.skips) do
    redis.call('DEL', k)
  end
end
flush()
if failure then
  return redis.error_reply(failure)
end

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
