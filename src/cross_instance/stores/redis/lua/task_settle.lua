-- needs: clock queue
-- ARGV: prefix, now, task id, fence, outcome (done, failed or retry), text (JSON: the result
-- or the error). core/workqueue.settle: the same report sent again gets the same task back;
-- a run whose lease ended settles nothing.
-- Reply: {"task", field, value, ...}, or {"none"}: the fence may not settle it.
return task_settle_step(ARGV[1], clock(ARGV[2]), ARGV[3], tonumber(ARGV[4]), ARGV[5],
                        ARGV[6])
