-- needs: queue
-- ARGV: prefix, now, task id. Reply: {"task", field, value, ...} or {"none"}.
local t = task_load(ARGV[1], ARGV[3])
if t == nil then return {"none"} end
return task_reply(t)
