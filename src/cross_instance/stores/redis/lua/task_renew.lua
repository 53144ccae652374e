-- needs: clock queue
-- ARGV: prefix, now, task id, fence, lease (µs). Moves the run's lease end to now + lease
-- while that fence runs the task with its lease unexpired.
-- Reply: {"task", field, value, ...}, or {"none"}: the run is over (lost, or settled).
local P, now, id = ARGV[1], clock(ARGV[2]), ARGV[3]
local t = task_load(P, id)
if t == nil or not task_holds(t, tonumber(ARGV[4]), now) then return {"none"} end
t.lease = now + tonumber(ARGV[5])
redis.call("HSET", P .. "t:" .. id, "lease", t.lease)
redis.call("ZADD", P .. "tleases", t.lease, id)
return task_reply(t)
