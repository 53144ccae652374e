-- needs: clock json limiter slots bucket permits queue registry ownership
-- ARGV: prefix, now, workflow id, caller id, epoch or "", who acted for the caller or ""
local P, wid, cid = ARGV[1], ARGV[3], ARGV[4]
local w = load_workflow(P, wid)
if w == nil or w.owner ~= cid or (ARGV[5] ~= "" and w.epoch ~= tonumber(ARGV[5])) then return 0 end
redis.call("HDEL", P .. "wf:" .. wid, "owner", "pid", "host", "boot", "pidns", "ticks")
redis.call("HSET", P .. "wf:" .. wid, "updated", wall_ms())
add_event(P, "workflow_released", cid,
          encode_flat({workflow = wid, by = ARGV[6] ~= "" and ARGV[6] or nil}))
return 1
