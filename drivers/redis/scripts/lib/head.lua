-- The head of the scripts that settle, reserve, extend, clear, retry failed jobs or release
-- claims: `scripts.rs` puts it (and the other `lib/` pieces a script uses) in front of the
-- script, so everything here is local to one call. Each piece defines only what its scripts
-- need: Redis runs a script's whole chunk on every call, and each closure, table, argument
-- and `redis.call` costs (an argument or a table about a thousand instructions, a command
-- several thousand). `push.lua`, the hottest, stands alone for that reason.
--
-- Such a script's KEYS start with each queue's `pending`, `reserved` and `seq`, in the order
-- of its queue table; the other keys follow (the registry last), and ARGV names them by
-- their position among those others (`key(ref)`). ARGV starts with the head, read here:
-- the claim prefix (`{P}:claim:`; '' where claims are off, on Redis Cluster), `1` if the
-- last key is the queue registry, the number of queues, then their names. The rest of ARGV
-- is the script's own, read from `A` on.
--
-- A job is the hash `<queue base>job:<member>`: n name, p payload, a attempts, t token while
-- reserved (ending in `c` while the job holds a claim: see lib/reserve.lua), and for a job
-- with a unique claim u its key and w until when it holds it (`started`, `succeeded`,
-- `terminal`). A member is the queue's sequence number zero-padded
-- to 16 digits, so members with the same score sort in push order. A claim is the string
-- `<claim prefix><key>` holding the id (`<queue>/<number>`) of the job that holds it; a
-- failed job holds its claim under the id it had in its queue.
--
-- Claims released by a transition (acknowledge, fail, reserve, clear, the failed store)
-- are found through the job's `u` field, so their keys are built here, not declared in
-- KEYS: fine on one server, which is the only place claims are on.

-- The server's time in Unix milliseconds, read once per call and only when needed (a batch
-- of acknowledges does without), and the same as text: Lua formats a number it passes to
-- Redis with `%.14g`, which costs more than many a command, so the scripts pass numbers
-- they make per job as text.
local now_ms, now_text
local function now()
  if now_ms == nil then
    local t = redis.call('TIME')
    now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    now_text = string.format('%d', now_ms)
  end
  return now_ms
end

local A = 1
local function arg()
  local v = ARGV[A]
  A = A + 1
  return v
end
local function num()
  return tonumber(arg())
end

-- `queues[i]` is queue i; `queue_of` finds it by its number as written in ARGV, sparing a
-- `tonumber` (a `strtod`) per job.
local claim_prefix, has_registry, queue_count = ARGV[1], ARGV[2] == '1', tonumber(ARGV[3])
local registry = has_registry and KEYS[#KEYS] or nil
local queues, queue_of = {}, {}
for i = 1, queue_count do
  local k = 3 * i - 2
  local q = {
    name = ARGV[3 + i], pending = KEYS[k], reserved = KEYS[k + 1], seq = KEYS[k + 2],
    base = string.sub(KEYS[k], 1, -8), woken = 0,
  }
  queues[i], queue_of[string.format('%d', i)] = q, q
end
A = 4 + queue_count

-- The key an ARGV value names (`ref`: its position among the keys after the queues').
local function key(ref)
  return KEYS[3 * queue_count + tonumber(ref)]
end

-- The public id of a member of queue `q`: `<queue>/<number without padding>`.
local function job_id(q, member)
  local n = string.gsub(member, '^0+', '')
  if n == '' then
    n = '0'
  end
  return q.name .. '/' .. n
end

-- Releases the claim on `unique` (a unique key) if the job `holder` (an id) holds it.
local function release_claim(unique, holder)
  if unique and claim_prefix ~= '' then
    local claim = claim_prefix .. unique
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
