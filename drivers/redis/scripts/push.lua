-- Pushes a batch of jobs, each with its unique claim, in one atomic step (after lib.lua).
--
-- ARGV: the head (see lib.lua), the number of jobs, then each job as `read_job` reads it.
-- KEYS: each queue's `pending`, `reserved` and `seq`, the registry, each claim.
-- Returns per job its sequence number (created: the driver makes the id
-- `<queue>/<number>` of it) or the id of the job holding its key (a duplicate, not stored).
head()
local jobs = {}
for j = 1, num() do
  jobs[j] = read_job()
end
local out = push_jobs(jobs)
publish()
return out
