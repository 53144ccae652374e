-- needs: clock json queue registry
-- ARGV: prefix, now, instance id (registered), lease (µs). Queues again up to 50 runs whose
-- lease ran out, then starts the next task of the caller's queue and the shared pool's.
-- Reply: {"task", field, value, ...}, {"none"} or {"not_registered"}.
return task_take_step(ARGV[1], clock(ARGV[2]), ARGV[3], tonumber(ARGV[4]), add_event)
