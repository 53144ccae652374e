-- needs: clock json limiter arbiter
-- Decide one request from a JSON state (tests only: the differential test of arbiter.lua).
local state = cjson.decode(ARGV[1])
local function need(n)
  local ticket = n.ticket
  if ticket == cjson.null then ticket = nil end
  return {instance_id = n.instance_id, rates = n.rates, slots = n.slots, ticket = ticket}
end
local waiters = {}
for i, w in ipairs(state.waiters) do waiters[i] = need(w) end
local cap = state.cap
for _, key in ipairs({"tats", "specs", "group_used", "group_limit", "holders"}) do
  if cap[key] == nil or next(cap[key]) == nil then cap[key] = {} end
end
local grant, at, slot_blocked, ahead, reason = arbitrate(need(state.me), waiters, cap,
  state.now)
return {grant and 1 or 0, at, slot_blocked and 1 or 0, ahead, reason}
