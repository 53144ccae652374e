-- needs: clock queue
-- ARGV: prefix, now, task id, fence, outcome (done, failed or retry), text (JSON: the result
-- or the error). core/workqueue.settle: the same report sent again gets the same task back.
-- Reply: {"task", field, value, ...}, or {"none"}: the fence may not settle it.
local P, id, fence, outcome, text = ARGV[1], ARGV[3], tonumber(ARGV[4]), ARGV[5], ARGV[6]
local t = task_load(P, id)
if t == nil then return {"none"} end
if t.fence == fence and t.state ~= "running" then
  local same
  if outcome == "done" then same = t.state == "done" and t.result == text
  elseif outcome == "failed" then same = t.state == "failed" and t.error == text
  else same = t.error == text and (t.state == "queued" or t.state == "failed") end
  if same then return task_reply(t) end
  return {"none"}
end
if t.state ~= "running" or t.fence ~= fence then return {"none"} end
local after = task_copy(t)
after.lease = nil
if outcome == "done" then
  after.state, after.result = "done", text
elseif outcome == "failed" or t.attempts >= t.max then
  after.state, after.error = "failed", text
else
  after.state, after.error = "queued", text
end
task_move(P, t, after)
return task_reply(after)
