-- needs: clock json queue registry
-- ARGV: prefix, now, instance id (registered), lease (µs). Queues again up to 50 runs whose
-- lease ran out (the SQLite store's EXPIRED_PER_STEP), then starts the next task in run order
-- of the caller's queue and the shared pool's under the lease.
-- Reply: {"task", field, value, ...}, {"none"} or {"not_registered"}.
local P, now, id = ARGV[1], clock(ARGV[2]), ARGV[3]
if redis.call("EXISTS", P .. "i:" .. id) == 0 then return {"not_registered"} end
task_requeue_expired(P, now, 50, add_event)
local t, pooled = task_head(P, id), task_head(P, "")
if pooled ~= nil and (t == nil or pooled.priority > t.priority
    or (pooled.priority == t.priority and pooled.seq < t.seq)) then
  t = pooled
end
if t == nil then return {"none"} end
return task_reply(task_start(P, t, id, now + tonumber(ARGV[4])))
