-- needs: clock json queue registry
-- ARGV: prefix, now, thief id (registered), lease (µs), min queued. Queues again up to 50
-- runs whose lease ran out, then moves the next queued task of the victim
-- (core/workqueue.steal_victim) to the thief and starts it there under the lease; counted in
-- the thief's stealing stats either way.
-- Reply: {"task", field, value, ...}, {"none"} or {"not_registered"}.
local P, now, thief = ARGV[1], clock(ARGV[2]), ARGV[3]
if redis.call("EXISTS", P .. "i:" .. thief) == 0 then return {"not_registered"} end
task_requeue_expired(P, now, 50, add_event)
-- steal_victim: the most queued (more than min queued), not the thief nor the pool; ties to
-- the least recently stolen from, then the smallest id (members of one score come in byte
-- order, so the first of the least recent is the smallest id). A level holding only the
-- thief or the pool gives way to the next lower one.
local victim, above, least = nil, "+inf", "(" .. ARGV[5]
while victim == nil do
  local top = redis.call("ZREVRANGEBYSCORE", P .. "tbusy", above, least, "WITHSCORES",
    "LIMIT", 0, 1)
  if #top == 0 then break end
  local queued, since = top[2], nil
  for _, owner in ipairs(redis.call("ZRANGEBYSCORE", P .. "tbusy", queued, queued)) do
    if owner ~= thief and owner ~= "" then
      local stolen = tonumber(redis.call("HGET", P .. "to:" .. owner, "stolen_from")) or 0
      if since == nil or stolen < since then victim, since = owner, stolen end
    end
  end
  above = "(" .. queued
end
local t = victim and task_head(P, victim)
if not t then
  task_count(P, thief, "attempts", 1)
  task_count(P, thief, "misses", 1)
  return {"none"}
end
local run = task_start(P, t, thief, now + tonumber(ARGV[4]))
redis.call("HSET", P .. "to:" .. victim, "stolen_from", now)
task_count(P, thief, "attempts", 1)
task_count(P, thief, "steals", 1)
redis.call("HINCRBYFLOAT", P .. "to:" .. thief, "waited_ms", math.max(now - t.enq, 0) / 1000)
return task_reply(run)
