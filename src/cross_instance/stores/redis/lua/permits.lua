-- Limits, buckets and the queue on Redis (the SQLite store's permits.py and learning.py, with
-- the decisions of arbiter.lua and adaptive.lua; held permits and slot counts: slots.lua):
-- the steps of the permit operations (permit_*.lua). Needs clock, limiter, slots and bucket;
-- the full acquire also restart, admit and arbiter, learning adaptive.
-- Keys: P.."lim:"..key hash instance -> "a b" (published limits), P.."limkeys:"..id,
-- P.."b:"..key bucket hash (bucket.lua), P.."bkeys" set, P.."waiters" zset of tickets,
-- P.."w:"..ticket hash, P.."ww:"..id, P.."wseq",
-- P.."u:"..key hash instance -> "win count" (usage from heartbeats), P.."ukeys:"..id.

local BIG = 1073741824  -- 1 << 30: "no global limit"

local function weighted_share(total, my_priority, priorities)
  local weight = 0
  for _, p in ipairs(priorities) do weight = weight + p end
  if weight == 0 then weight = 1 end
  return math.max(1, idiv(total * my_priority, weight))
end

local function starts_with(s, prefix) return string.sub(s, 1, #prefix) == prefix end

local function recompute_limit(P, key)  -- the strictest limit among those who published one
  local values = redis.call("HVALS", P .. "lim:" .. key)
  if #values == 0 then return end  -- nobody left: keep the last effective limit
  local a, b = nil, nil
  for _, v in ipairs(values) do
    local sep = string.find(v, " ")
    local va, vb = tonumber(string.sub(v, 1, sep - 1)), tonumber(string.sub(v, sep + 1))
    a = a and math.min(a, va) or va
    b = b and math.min(b, vb) or vb
  end
  if starts_with(key, "r:") or starts_with(key, "t:") then
    local bucket = load_bucket(P, key)
    if bucket ~= nil then
      bucket.per_minute, bucket.burst = a, b
      save_bucket(P, bucket)
    end
  else
    redis.call("HSET", P .. "gate", "l:" .. key, a)
  end
end

local function drop_waiter(P, ticket)
  local inst = redis.call("HGET", P .. "w:" .. ticket, "instance")
  redis.call("ZREM", P .. "waiters", ticket)
  redis.call("DEL", P .. "w:" .. ticket)
  if inst then redis.call("SREM", P .. "ww:" .. inst, ticket) end
end

-- What an instance held besides its record (called by remove_instance's caller).
local function drop_holdings(P, id)
  for _, pid in ipairs(redis.call("HKEYS", P .. "pm:" .. id)) do drop_permit(P, id, pid) end
  redis.call("DEL", P .. "pm:" .. id)
  for _, t in ipairs(redis.call("SMEMBERS", P .. "ww:" .. id)) do drop_waiter(P, t) end
  redis.call("DEL", P .. "ww:" .. id)
  for _, key in ipairs(redis.call("SMEMBERS", P .. "ukeys:" .. id)) do
    redis.call("HDEL", P .. "u:" .. key, id)
  end
  redis.call("DEL", P .. "ukeys:" .. id)
  local keys = redis.call("SMEMBERS", P .. "limkeys:" .. id)
  for _, key in ipairs(keys) do redis.call("HDEL", P .. "lim:" .. key, id) end
  redis.call("DEL", P .. "limkeys:" .. id)
  for _, key in ipairs(keys) do recompute_limit(P, key) end
end

-- --- Publishing limits (permit_publish.lua) ------------------------------------------------

-- ``instance``'s limit for rate bucket ``key``; a new bucket starts as restart.lua says.
local function publish_rate(P, now, instance, key, per_minute, burst)
  redis.call("HSET", P .. "lim:" .. key, instance, per_minute .. " " .. burst)
  if redis.call("HEXISTS", P .. "b:" .. key, "s") == 0 then
    create_bucket(P, key, per_minute, burst, restart_tat(P, now, burst, interval(per_minute)))
    redis.call("SADD", P .. "bkeys", key)
  end
  redis.call("SADD", P .. "limkeys:" .. instance, key)
end

-- ``instance``'s limit for slot group ``key`` (the first one published counts until
-- recompute_limit decides).
local function publish_group(P, instance, key, limit)
  redis.call("HSET", P .. "lim:" .. key, instance, limit .. " 0")
  redis.call("HSETNX", P .. "gate", "l:" .. key, limit)
  redis.call("SADD", P .. "limkeys:" .. instance, key)
end

-- --- The full acquire (permit_acquire.lua, where admit.lua's uncontended path does not grant)
-- ``req``: the request as permit_acquire.lua reads it: permit_id, instance, kind, record,
-- reports, rates (as admit.lua's acquire_at_once takes them), slots (its slot groups, from
-- its gate fields), ticket (the wait's: the caller's id for it, the same in each attempt;
-- kept as text: it has more digits than a Lua number holds), queue (whether to queue when not
-- granted) and waiter_ttl (how long, µs, a silent waiter keeps its place).

-- A bucket (as load_bucket reads it) with the spec {burst, t, per_minute} and TAT the limiter
-- uses now, or nil if nothing was published for it.
local function bucket_now(P, key, reports)
  local b = load_bucket(P, key)
  if b == nil then return nil end
  local slow = reports and not b.probed and starts_with(key, "r:")
  local pm, burst, t, tat = effective(b.per_minute, b.burst, b.tat, b.lrate, b.cooldown_until,
    slow)
  return b, {burst = burst, t = t, per_minute = pm}, tat
end

-- The slot groups of a request's gate fields ("l:"..group, "u:"..group, ...).
local function slot_groups(gate)
  local slots = {}
  for k = 1, #gate, 2 do slots[#slots + 1] = string.sub(gate[k], 3) end
  return slots
end

-- A retry of a call whose reply was lost (redis-py resends it after a dropped connection):
-- the permit exists already, so the answer is the earlier grant's (nil: no earlier grant)
-- instead of a second one.
local function earlier_grant(P, req)
  local earlier = redis.call("HGET", P .. "pm:" .. req.instance, req.permit_id)
  if earlier then return granted_reply(tonumber(string.match(earlier, "^%d+")), 0, 0, 0, 0) end
  return nil
end

-- The request's buckets now ({b, spec, tat} per rate, as bucket_now), or nil and the refusal
-- of what can never be granted, found before anything is changed (nothing released then).
local function request_buckets(P, req)
  if redis.call("EXISTS", P .. "i:" .. req.instance) == 0 then return nil, {"not_registered"} end
  local mine = {}
  for i, r in ipairs(req.rates) do
    local b, spec, tat = bucket_now(P, r[1], req.reports)
    if b == nil then return nil, {"error", "no limit published for bucket " .. r[1]} end
    if r[2] > spec.burst then
      return nil, {"impossible", r[2] .. " tokens requested from " .. r[1]
        .. " but its burst is " .. spec.burst}
    end
    mine[i] = {b, spec, tat}
  end
  return mine
end

-- The gate in one read: slot limits and counts per group, how many instances reserve
-- capacity, and the end of a restart's grace (nil: none, or it is over).
local function read_gate(P, now)
  local gate = {limit = {}, used = {}, reserving = 0, grace = nil}
  local flat = redis.call("HGETALL", P .. "gate")
  for i = 1, #flat, 2 do
    local field, n = flat[i], tonumber(flat[i + 1])
    local sort, g = string.sub(field, 1, 2), string.sub(field, 3)
    if sort == "l:" then gate.limit[g] = n
    elseif sort == "u:" then gate.used[g] = n
    elseif field == "reserving" then gate.reserving = n
    elseif field == "grace" then gate.grace = grace_until(P, now, n) end
  end
  return gate
end

-- Per instance, its permits held, capacity reserved and share of the global limit: read only
-- while anyone reserves capacity or waits (otherwise no share decides anything).
local function read_holders(P, gate)
  local holders = {}
  if gate.reserving > 0 or redis.call("ZCARD", P .. "waiters") > 0 then
    local instances, held, priorities = {}, {}, {}
    for _, id in ipairs(redis.call("SMEMBERS", P .. "ids")) do
      local v = redis.call("HMGET", P .. "i:" .. id, "reserved", "priority")
      if v[1] then
        instances[#instances + 1] = {id, tonumber(v[1]), tonumber(v[2])}
        priorities[#priorities + 1] = tonumber(v[2])
        held[id] = redis.call("HLEN", P .. "pm:" .. id)
      end
    end
    local total = gate.limit[GLOBAL_GROUP] or BIG
    for _, inst in ipairs(instances) do
      holders[inst[1]] = {used = held[inst[1]], reserved = inst[2],
                          share = weighted_share(total, inst[3], priorities)}
    end
  end
  return holders
end

-- The wait's place in the queue (its score); nil: not queued yet, or its place was given up
-- (it was away too long): it queues again at the back.
local function queue_place(P, ticket)
  return tonumber(redis.call("ZSCORE", P .. "waiters", ticket))
end

-- The live queue the request is weighed against (silent waiters leave it), as arbitrate reads
-- waiters, and the set of every bucket key the request and they use. A queued wait within its
-- instance's share yields only to earlier places (arbiter.lua's order), so only those are
-- read: the rest of a long queue cannot change its answer.
local function read_waiters(P, now, req, place, holders)
  local me = holders[req.instance]
  local queue
  if place ~= nil and me ~= nil and me.used < me.share then
    queue = redis.call("ZRANGEBYSCORE", P .. "waiters", "-inf", "(" .. place, "WITHSCORES")
  else
    queue = redis.call("ZRANGE", P .. "waiters", 0, -1, "WITHSCORES")
  end
  local waiters, keyset = {}, {}
  for _, r in ipairs(req.rates) do keyset[r[1]] = true end
  local decoded = {}  -- a long queue repeats a few request shapes: each decoded once here
  local function decode(text)
    local v = decoded[text]
    if v == nil then
      v = cjson.decode(text)
      decoded[text] = v
    end
    return v
  end
  for k = 1, #queue, 2 do
    local t, order = queue[k], tonumber(queue[k + 1])
    if t ~= req.ticket then
      local w = redis.call("HMGET", P .. "w:" .. t, "instance", "rates", "slots", "seen")
      if tonumber(w[4]) < now - req.waiter_ttl then
        drop_waiter(P, t)
      else
        local rates = decode(w[2])
        for _, r in ipairs(rates) do keyset[r[1]] = true end
        waiters[#waiters + 1] = {instance_id = w[1], rates = rates, slots = decode(w[3]),
                                 ticket = order}
      end
    end
  end
  return waiters, keyset
end

-- The capacity arbitrate weighs against (arbiter.lua's cap): every bucket in ``keyset`` (the
-- request's as request_buckets read them, the waiters' others now), the slot groups and the
-- holders.
local function capacity(P, req, mine, keyset, gate, holders)
  local specs, tats = {}, {}
  for i, r in ipairs(req.rates) do specs[r[1]], tats[r[1]] = mine[i][2], mine[i][3] end
  for key in pairs(keyset) do  -- the waiters' other buckets
    if specs[key] == nil then
      local b, spec, tat = bucket_now(P, key, req.reports)
      if b then specs[key], tats[key] = spec, tat end
    end
  end
  return {tats = tats, specs = specs, group_used = gate.used, group_limit = gate.limit,
          holders = holders}
end

-- The request as arbitrate reads it, at ``place`` (nil: a new request).
local function request_need(req, place)
  return {instance_id = req.instance, rates = req.rates, slots = req.slots, ticket = place}
end

-- Restarted empty (restart.lua): nothing is granted before ``grace`` (nil: no grace) ends.
-- Returns granted, ready at and the reason, held back if the grace runs.
local function hold_for_grace(grace, granted, at, slot_blocked, reason)
  if grace ~= nil and (granted or at < grace) then
    granted, at = false, math.max(at, grace)
    if not slot_blocked then
      reason = "the store restarted empty: waiting for the instances that were alive to "
        .. "re-declare their permits"
    end
  end
  return granted, at, reason
end

-- The queue's length as the uncontended path reads it: exact whenever the full path has run.
local function sync_waiting(P)
  redis.call("HSET", P .. "gate", "waiting", redis.call("ZCARD", P .. "waiters"))
end

-- Grant the request (``mine``: its buckets, from request_buckets; ``place``: its wait's, if
-- queued; ``freed``: the permits this call freed): its wait leaves the queue, the slots freed
-- that it did not take are announced, the permit is held and its buckets spent. The reply:
-- granted_reply, then the queue's length after it.
local function grant(P, now, req, mine, place, freed)
  if place ~= nil then drop_waiter(P, req.ticket) end
  sync_waiting(P)
  local queued = announce(P, freed - 1, req.instance)
  add_permit(P, req.instance, req.permit_id, now, req.record, req.kind)
  local reply
  for i, r in ipairs(req.rates) do
    local b, spec, tat = mine[i][1], mine[i][2], mine[i][3]
    local win, cur, prev = spend(P, now, r[1], r[2], spec.t, tat, bucket_numbers(b))
    if i == 1 then reply = granted_reply(now, win, cur, prev, b.per_minute) end
  end
  return reply .. struct.pack("<i8", queued)
end

-- The request waits: queued at the back if it has no place (a new wait, or one whose place
-- was given up), else seen now. Returns its place.
local function enqueue(P, now, req, place)
  if place == nil then
    place = redis.call("INCR", P .. "wseq")
    redis.call("ZADD", P .. "waiters", place, req.ticket)
    redis.call("HSET", P .. "w:" .. req.ticket, "instance", req.instance,
      "rates", cjson.encode(req.rates), "slots", cjson.encode(req.slots), "seen", now)
    redis.call("SADD", P .. "ww:" .. req.instance, req.ticket)
  else
    redis.call("HSET", P .. "w:" .. req.ticket, "seen", now)
  end
  sync_waiting(P)
  return place
end

-- --- Corrections (permit_adjust.lua, permit_reset.lua) --------------------------------------

-- A call's real size differed from what its permit took: give back (``delta`` < 0) or take
-- the difference from bucket ``key``.
local function adjust_bucket(P, now, key, delta)
  local b = load_bucket(P, key)
  if b == nil or delta == 0 then return end
  local t = interval(b.per_minute)
  b.tat = delta < 0 and refund(b.tat, now, t, -delta) or consume(b.tat, now, t, delta)
  b.cur = math.max(0, b.cur + delta)
  save_bucket(P, b)
end

-- Forget what bucket ``key`` learned (its published limit applies again): 1, or 0 if nobody
-- published it.
local function forget_learned(P, key)
  local b = load_bucket(P, key)
  if b == nil then return 0 end
  b.lrate, b.reported_limit = nil, nil
  b.decreased_at, b.last_429, b.last_increase, b.cooldown_until = 0, 0, 0, 0
  save_bucket(P, b)
  return 1
end

-- --- Learning from a call's outcome (permit_record.lua: learning.py) -----------------------

local function opt(v) if v == cjson.null then return nil end return v end

-- The limits each provider stated, by bucket: {{key, limit, remaining, reset}, ...} (JSON
-- nulls where it stated nothing) as {key = {limit, remaining, reset}}.
local function stated_limits(reported)
  local by_key = {}
  for _, r in ipairs(reported) do by_key[r[1]] = {opt(r[2]), opt(r[3]), opt(r[4])} end
  return by_key
end

-- A bucket's learned state, as adaptive.lua's rules read and return it.
local function learned_state(row)
  return {rate = row.lrate or row.per_minute, decreased_at = row.decreased_at,
          last_429 = row.last_429, last_increase = row.last_increase,
          cooldown_until = row.cooldown_until, reported_limit = row.reported_limit}
end

-- What the outcome teaches bucket ``key`` (``row``, in learned state ``before``) under
-- ``policy`` ({enabled, reduction, recovery, min, max (null: the published limit),
-- max_cooldown}); ``stated``: what the provider stated for it, or nil; ``outcome``: {granted,
-- rate_limited, retry_after (nil: not said)}. Returns the new state, why it changed and the
-- bucket's TAT (moved on to what the provider says remains).
local function next_learned(row, key, before, now, outcome, stated, policy)
  local state, reason, new_tat = before, "", row.tat
  local ceiling = opt(policy.max) or row.per_minute
  local b = {floor = math.min(policy.min, ceiling), ceiling = ceiling,
             reduction = policy.reduction, recovery = policy.recovery,
             max_cooldown = policy.max_cooldown}
  if policy.enabled and stated ~= nil then
    local limit, remaining, reset = stated[1], stated[2], stated[3]
    state = on_reported(state, b, now, limit, remaining, reset)
    reason = "limit stated by the provider"
    if remaining ~= nil then
      local _, burst, t, eff_tat = effective(row.per_minute, row.burst, row.tat, state.rate,
        state.cooldown_until, false)
      local synced = synced_tat(eff_tat, now, burst, t, remaining)
      if synced > eff_tat then new_tat = synced end
    end
  end
  if outcome.rate_limited and starts_with(key, "r:") then
    local lowered
    state, lowered = on_rate_limited(state, b, now, outcome.granted, outcome.retry_after)
    if not policy.enabled then state.rate = before.rate end
    reason = (lowered and policy.enabled) and "429 error detected" or "429 (same epoch)"
  elseif policy.enabled and starts_with(key, "r:") then
    local used = windowed(row.win, row.cur, row.prev, now)
    local raised
    state, raised = on_success(state, b, now, used / math.max(state.rate, 1.0))
    if raised then reason = "recovered" end
  end
  return state, reason, new_tat
end

-- Save what bucket ``row`` learned (if anything changed, or it was never probed). Returns the
-- change {key, rate before, rate after, cooldown end, reason} if its learned state changed,
-- else nil.
local function save_learned(P, row, before, state, new_tat, reason)
  local same = state.rate == before.rate and state.decreased_at == before.decreased_at
    and state.last_429 == before.last_429 and state.last_increase == before.last_increase
    and state.cooldown_until == before.cooldown_until
    and state.reported_limit == before.reported_limit
  if same and new_tat == row.tat and row.probed then return nil end
  row.decreased_at, row.last_429 = state.decreased_at, state.last_429
  row.last_increase, row.cooldown_until = state.last_increase, state.cooldown_until
  row.tat, row.probed, row.reported_limit = new_tat, true, state.reported_limit
  if not (row.lrate == nil and state.rate == before.rate) then row.lrate = state.rate end
  save_bucket(P, row)
  if same then return nil end
  return {row.key, string.format("%.17g", before.rate), string.format("%.17g", state.rate),
          state.cooldown_until, reason}
end

-- Learn from one call's outcome for bucket ``key`` (see next_learned): the change, or nil (no
-- change, or nobody published the bucket).
local function learn(P, now, key, outcome, stated, policy)
  local row = load_bucket(P, key)
  if row == nil then return nil end
  local before = learned_state(row)
  local state, reason, new_tat = next_learned(row, key, before, now, outcome, stated, policy)
  return save_learned(P, row, before, state, new_tat, reason)
end

-- --- What a snapshot shows (permit_dump.lua) ------------------------------------------------

-- Every bucket as text ({key, bucket_text} each) and every bucket's usage from heartbeats
-- ({key, its "u:" hash flat} each).
local function buckets_and_usage(P)
  local buckets, usage = {}, {}
  for _, key in ipairs(redis.call("SMEMBERS", P .. "bkeys")) do
    local b = load_bucket(P, key)
    if b ~= nil then buckets[#buckets + 1] = {key, bucket_text(b)} end
    usage[#usage + 1] = {key, redis.call("HGETALL", P .. "u:" .. key)}
  end
  return buckets, usage
end

-- Every instance's permits held ({id, its "pm:" hash flat} each).
local function held_permits(P)
  local permits = {}
  for _, id in ipairs(redis.call("SMEMBERS", P .. "ids")) do
    permits[#permits + 1] = {id, redis.call("HGETALL", P .. "pm:" .. id)}
  end
  return permits
end
