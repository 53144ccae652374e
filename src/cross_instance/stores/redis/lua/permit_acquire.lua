-- needs: clock limiter slots bucket admit
-- ARGV: prefix, now, permit id, ticket or "" (the wait's: the caller's id for it, the same in
-- each attempt, and the id of the permit it is granted), queue 1/0 (wait if not granted),
-- waiter ttl (µs), then the request as the client builds it once per plan: instance, reports
-- 1/0, the permit's kind, its record after the grant time (" tokens kind"), rates JSON
-- [[bucket, cost], ...], gate fields JSON ["l:"..group, "u:"..group, ...] (per slot group);
-- then the permits to free JSON (see free_permits in slots.lua).
-- Replies: granted (admit.lua's granted_reply; from the full path followed by the queue's
-- length), or {"waiting", ticket, ready at, slot blocked 1/0, ahead, reason, now, place},
-- {"none"}, {"not_registered"}, {"impossible", why}, {"error", why}.
--
-- The uncontended acquire is decided first (admit.lua), before the other libraries are
-- defined: as a script, defining them costs more than the decision.
local P, now = ARGV[1], clock(ARGV[2])
local permit_id, ticket, instance, kind, record = ARGV[3], ARGV[4], ARGV[7], ARGV[9], ARGV[10]
local reports, rates, gate_fields = ARGV[8] == "1", plan_value(ARGV[11]), plan_value(ARGV[12])
local free = cjson.decode(ARGV[13])
if ticket == "" then  -- a new request (not an attempt of a wait)
  local granted = acquire_at_once(P, now, permit_id, instance, kind, record, reports, rates,
    gate_fields, free)
  if granted then return granted end
  ticket = permit_id
end

-- then needs: restart arbiter permits
local req = {permit_id = permit_id, ticket = ticket, queue = ARGV[5] == "1",
             waiter_ttl = tonumber(ARGV[6]), instance = instance, reports = reports,
             kind = kind, record = record, rates = rates, slots = slot_groups(gate_fields)}
local earlier = earlier_grant(P, req)
if earlier then return earlier end
local mine, refused = request_buckets(P, req)
if refused then return refused end
local freed = free_permits(P, instance, free, nil)
local gate = read_gate(P, now)
local holders = read_holders(P, gate)
local place = queue_place(P, req.ticket)
local waiters, keyset = read_waiters(P, now, req, place, holders)
local cap = capacity(P, req, mine, keyset, gate, holders)
local granted, at, slot_blocked, ahead, reason = arbitrate(request_need(req, place), waiters,
  cap, now)
granted, at, reason = hold_for_grace(gate.grace, granted, at, slot_blocked, reason)
if granted then return grant(P, now, req, mine, place, freed) end
announce(P, freed, req.instance)
if not req.queue then
  sync_waiting(P)
  return {"none"}
end
place = enqueue(P, now, req, place)
return {"waiting", req.ticket, at, slot_blocked and 1 or 0, ahead, reason, now, place}
