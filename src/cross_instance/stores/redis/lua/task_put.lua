-- needs: clock queue
-- ARGV: prefix, now, owner, task id, tool name, priority, payload (JSON text), max attempts.
-- Queues a new task last of its priority on the registered owner's queue; a task id kept
-- already is not queued again (a resent put): that task is the reply as it is.
-- Reply: {"task", field, value, ...} or {"not_registered"}.
local P, now, owner, id = ARGV[1], clock(ARGV[2]), ARGV[3], ARGV[4]
if redis.call("EXISTS", P .. "i:" .. owner) == 0 then return {"not_registered"} end
local found = task_load(P, id)
if found ~= nil then return task_reply(found) end
local t = {id = id, owner = owner, tool = ARGV[5], priority = tonumber(ARGV[6]),
           payload = ARGV[7], wall = wall_ms(), seq = redis.call("INCR", P .. "tseq"),
           attempts = 0, state = "queued", fence = 0, max = tonumber(ARGV[8]), enq = now}
redis.call("HSET", P .. "t:" .. id, "id", id, "owner", owner, "tool", t.tool,
  "priority", t.priority, "payload", t.payload, "wall", t.wall, "seq", t.seq,
  "attempts", 0, "state", "queued", "fence", 0, "max", t.max, "enq", now)
redis.call("ZADD", P .. "tq:" .. owner, (1000 - t.priority) * 4398046511104 + t.seq, id)
task_count(P, owner, "queued", 1)
return task_reply(t)
