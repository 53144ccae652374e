-- needs: clock json queue registry
-- ARGV: prefix, now, task id, fence, outcome, text, instance id, lease (µs). task_settle
-- then, only if it settled, task_take, in one step: a worker's "done, next" costs one call.
-- Reply: {settle's reply, take's reply} (take's is {"none"} when nothing was settled).
if redis.call("EXISTS", ARGV[1] .. "i:" .. ARGV[7]) == 0 then  -- nothing done
  return {{"not_registered"}, {"not_registered"}}
end
local now = clock(ARGV[2])
local settled = task_settle_step(ARGV[1], now, ARGV[3], tonumber(ARGV[4]), ARGV[5], ARGV[6])
if settled[1] ~= "task" then return {settled, {"none"}} end
return {settled, task_take_step(ARGV[1], now, ARGV[7], tonumber(ARGV[8]), add_event)}
