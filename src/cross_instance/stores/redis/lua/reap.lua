-- needs: clock json limiter slots bucket permits queue registry
-- ARGV: prefix, now, here JSON, evidence JSON. Removes every dead instance (its tasks go to
-- the shared pool), then queues again every run whose lease ran out; returns their ids.
local P, now = ARGV[1], clock(ARGV[2])
local here, evidence = cjson.decode(ARGV[3]), cjson.decode(ARGV[4])
local dead = {}
for _, id in ipairs(redis.call("SMEMBERS", P .. "ids")) do
  local rec = load_instance(P, id)
  if rec == nil then
    redis.call("SREM", P .. "ids", id)
  elseif judge(rec, now, here, evidence) == "dead" then
    local age_ms = math.floor((now - rec.hb_us) / 1000)
    remove_instance(P, id, "instance_down",
      "dead (pid " .. rec.pid .. ", heartbeat " .. age_ms .. " ms ago)")
    dead[#dead + 1] = id
  end
end
task_requeue_expired(P, now, nil, add_event)  -- every run whose lease ran out (queue.lua)
return dead
