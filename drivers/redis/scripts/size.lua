-- Counts a queue's jobs by state: waiting, delayed, reserved.
--
-- KEYS[1] `pending`, KEYS[2] `reserved`.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local waiting = redis.call('ZCOUNT', KEYS[1], '-inf', now)
local all = redis.call('ZCARD', KEYS[1])
return { waiting, all - waiting, redis.call('ZCARD', KEYS[2]) }
