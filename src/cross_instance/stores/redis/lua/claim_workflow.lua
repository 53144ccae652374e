-- needs: clock json limiter slots bucket permits queue registry ownership
-- ARGV: prefix, now, workflow id, caller id, claim 0/1, auto_claim 0/1, force, here, evidence,
-- may ask 0/1: reply {"probe", id, pid, ticks} when the owner runs on the caller's host and
-- ``evidence`` does not describe it (the caller probes its pid and calls again)
local P, now, wid, cid = ARGV[1], clock(ARGV[2]), ARGV[3], ARGV[4]
local here, evidence = cjson.decode(ARGV[8]), cjson.decode(ARGV[9])
local caller = load_instance(P, cid)
if caller == nil then return {"not_registered"} end
local floor = floor_of(P, now)
local before = load_workflow(P, wid)
local verdict, registered = nil, false  -- registered: the owner's record is that process
if before ~= nil and before.owner ~= nil and not same_process(before, caller) then
  local owner = load_instance(P, before.owner)
  registered = same_process(before, owner)
  if registered and ARGV[10] == "1" and wants_probe(owner, now, here, evidence) then
    return {"probe", owner.id, owner.pid, owner.ticks}
  end
  verdict = registered and judge(owner, now, here, evidence) or "dead"
end
local action, epoch, reason = decide(before, caller, verdict, ARGV[5] == "1", ARGV[6] == "1",
  ARGV[7], floor)
if action ~= "claimed" and action ~= "auto_claimed" and action ~= "force_claimed" then
  return {action, epoch, reason, workflow_reply(before), workflow_reply(before)}
end
if verdict == "dead" and registered then
  remove_instance(P, before.owner, "instance_down",
    "dead (found by a claim of workflow " .. wid .. ")")
end
local wall = wall_ms()
redis.call("HSET", P .. "wf:" .. wid, "owner", cid, "pid", caller.pid, "host", caller.host,
  "boot", caller.boot, "pidns", caller.pidns, "ticks", caller.ticks, "epoch", epoch,
  "claimed", wall, "updated", wall)
redis.call("SADD", P .. "wfids", wid)
local previous = before and before.owner
add_event(P, "workflow_" .. action, cid, encode_flat({workflow = wid, epoch = epoch,
  reason = reason, previousOwner = previous or cjson.null,
  previousPid = previous and before.pid or cjson.null}))
return {action, epoch, reason, workflow_reply(before), workflow_reply(load_workflow(P, wid))}
