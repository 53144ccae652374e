-- needs: clock json limiter slots bucket permits queue registry ownership locks
-- ARGV: prefix, now, resource, caller id, ttl (µs), ticket (the caller's id for this wait, the
-- same in each attempt; kept as text), wait 1/0, waiter ttl (µs), new lock id, here JSON,
-- evidence JSON, may ask 1/0 (reply {"probe", id, pid, ticks} when the lock is held by a
-- process on the caller's host that ``evidence`` does not describe: the caller probes it and
-- calls again, so it need not list every instance for each attempt).
-- Replies: {"granted", lock}, {"waiting", ticket, retry at, holder or "", now}, {"none"},
-- {"not_registered"}, or the probe.
local P, now = ARGV[1], clock(ARGV[2])
local req = {res = ARGV[3], holder = ARGV[4], ttl = tonumber(ARGV[5]), ticket = ARGV[6],
             lock_id = ARGV[9]}
if load_instance(P, req.holder) == nil then return {"not_registered"} end
drop_silent_lock_waiters(P, req.res, req.ticket, now - tonumber(ARGV[8]))
local here, evidence = cjson.decode(ARGV[10]), cjson.decode(ARGV[11])
local current, last = load_lock(P, req.res)
if already_granted(current, req) then return {"granted", lock_reply(current)} end
if ARGV[12] == "1" then
  local probe = holder_probe(P, current, now, here, evidence)
  if probe ~= nil then return probe end
end
local reason = why_free(P, current, now, here, evidence)
local first = first_lock_waiter(P, req.res)
if reason ~= "" and my_turn(first, req.ticket) then
  return {"granted", lock_reply(grant_lock(P, now, req, current, last, reason))}
end
if ARGV[7] ~= "1" then return {"none"} end
queue_lock_wait(P, now, req)
local held = reason == "" and current ~= nil
return {"waiting", req.ticket, held and current.expires or now, held and current.holder or "",
        now}
