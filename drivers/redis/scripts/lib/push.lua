-- Pushing jobs with their claims (after head.lua), for the pushes a settlement makes and
-- the retry of a failed job. `push.lua` does the same on its own for `push`, the hottest
-- script: keep the two in step (the conformance suite runs both). One difference: only
-- `push.lua` replaces a queued holder (`Unique::replace`); here a claim is never given with
-- the negative index that asks for it, and a held key makes a duplicate.
--
-- A job is read in place from ARGV, where the driver wrote it: queue number, when it is
-- available ('' now, `+<ms>` after a delay, or `<ms>` a Unix time), name, payload, the
-- reference of its claim key (`0`: none), then for a claim its key and until when it holds
-- it. A batch is the list of its jobs' positions in ARGV, or in another table laid out the
-- same way (the jobs settle.lua releases from their waiting hashes).

-- The position of the job at `A`, moving `A` past it.
local function read_job()
  local at = A
  if ARGV[A + 4] == '0' then
    A = A + 5
  else
    A = A + 7
  end
  return at
end

-- Pushes the jobs of `batch` (positions in `src`, ARGV if nil) in order, each with its
-- claim: a job whose key is held, by a stored job or by an earlier job of the batch, is not
-- stored. Returns per job its sequence number (created) or the id of the job holding its
-- key (a duplicate).
local function push_jobs(batch, src)
  src = src or ARGV
  -- out[j]: true (to create), a holder's id, or false (a duplicate of the job dup_of[j]);
  -- the claim tables are made only for a batch with claims. Per queue, `q.n` counts the
  -- jobs to create and `q.e` gathers their ZADD arguments.
  local out, touched = {}, {}
  local first, dup_of, ids
  for j, o in ipairs(batch) do
    out[j] = true
    if src[o + 4] ~= '0' then
      local claim = key(src[o + 4])
      first, dup_of, ids = first or {}, dup_of or {}, ids or {}
      if first[claim] then
        out[j], dup_of[j] = false, first[claim]
      else
        local holder = redis.call('GET', claim)
        if holder then
          out[j] = holder
        else
          first[claim] = j
        end
      end
    end
    if out[j] == true then
      local q = queue_of[src[o]]
      if q.n == nil then
        q.n, q.e = 0, {}
        touched[#touched + 1] = q
      end
      q.n = q.n + 1
    end
  end
  -- One INCRBY per queue reserves the ids of the whole batch.
  for _, q in ipairs(touched) do
    q.next = redis.call('INCRBY', q.seq, q.n) - q.n
  end
  for j, o in ipairs(batch) do
    if out[j] == true then
      local q = queue_of[src[o]]
      local n = q.next + 1
      q.next = n
      local member = string.format('%016d', n)
      local hash = q.base .. 'job:' .. member
      if src[o + 4] ~= '0' then
        ids[j] = job_id(q, member)
        redis.call('HSET', hash, 'n', src[o + 2], 'p', src[o + 3], 'a', '0',
          'u', src[o + 5], 'w', src[o + 6])
        redis.call('SET', key(src[o + 4]), ids[j])
      else
        redis.call('HSET', hash, 'n', src[o + 2], 'p', src[o + 3], 'a', '0')
      end
      local at = src[o + 1]
      if at == '' then
        now()
        at = now_text
      elseif string.byte(at) == 43 then -- '+': a delay
        at = string.format('%d', now() + tonumber(string.sub(at, 2)))
      end
      local e = q.e
      e[#e + 1] = at
      e[#e + 1] = member
      out[j] = n
    end
  end
  if dup_of then
    for j, earlier in pairs(dup_of) do
      out[j] = ids[earlier]
    end
  end
  for _, q in ipairs(touched) do
    batched('ZADD', q.pending, q.e, 2)
    q.woken = q.woken + q.n
    if registry then
      redis.call('SADD', registry, q.name)
    end
    q.n, q.e, q.next = nil, nil, nil
  end
  return out
end
