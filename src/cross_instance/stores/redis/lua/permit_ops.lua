-- needs: clock limiter slots bucket admit
-- ARGV: prefix, now, op, then the op's arguments: flat for "acquire" (see admit.lua) and
-- "release" (instance, then the permits to free as free_permits reads them), one JSON value
-- for the others.
--
-- The uncontended acquire is decided first (admit.lua), before the other libraries are
-- defined: as a script, defining them costs more than the decision.
local P, now, op = ARGV[1], clock(ARGV[2]), ARGV[3]
if op == "acquire" and ARGV[5] == "" then
  local granted = acquire_at_once(P, now)
  if granted then return granted end
elseif op == "release" then  -- {freed, the queue's length}
  local freed = free_permits(P, ARGV[4], 5, nil)
  return {freed, announce(P, freed, ARGV[4])}
end

-- then needs: restart json arbiter adaptive permits registry
local function acquire_args()
  local req = {instance = ARGV[8], provider = ARGV[9], tokens = tonumber(ARGV[11]),
               reports = ARGV[12] == "1", kind = ARGV[13], record = ARGV[14], rates = {},
               slots = {}}
  if ARGV[10] ~= "" then req.model = ARGV[10] end
  local i = FIRST_RATE
  for k = 1, tonumber(ARGV[15]) do
    req.rates[k] = {ARGV[i], tonumber(ARGV[i + 1])}
    i = i + 2
  end
  local n_gate = tonumber(ARGV[i])
  for k = i + 1, i + n_gate, 2 do req.slots[#req.slots + 1] = string.sub(ARGV[k], 3) end
  return req, i + n_gate + 1  -- and where the permits to free start
end

-- A bucket (as load_bucket reads it) with the spec {burst, t, per_minute} and TAT the limiter
-- uses now, or nil if nothing was published for it.
local function bucket_now(key, reports)
  local b = load_bucket(P, key)
  if b == nil then return nil end
  local slow = reports and not b.probed and starts_with(key, "r:")
  local pm, burst, t, tat = effective(b.per_minute, b.burst, b.tat, b.lrate, b.cooldown_until,
    slow)
  return b, {burst = burst, t = t, per_minute = pm}, tat
end

local function opt(v) if v == cjson.null then return nil end return v end

local q = op ~= "acquire" and cjson.decode(ARGV[4]) or nil
if op == "publish" then  -- q = {instance, rates = {{key, per_minute, burst}}, groups = {{key, lim}}}
  local keys = {}
  for _, r in ipairs(q.rates) do
    redis.call("HSET", P .. "lim:" .. r[1], q.instance, r[2] .. " " .. r[3])
    if redis.call("HEXISTS", P .. "b:" .. r[1], "s") == 0 then
      create_bucket(P, r[1], r[2], r[3], restart_tat(P, now, r[3], interval(r[2])))
      redis.call("SADD", P .. "bkeys", r[1])
    end
    redis.call("SADD", P .. "limkeys:" .. q.instance, r[1])
    keys[#keys + 1] = r[1]
  end
  for _, g in ipairs(q.groups) do
    redis.call("HSET", P .. "lim:" .. g[1], q.instance, g[2] .. " 0")
    redis.call("HSETNX", P .. "gate", "l:" .. g[1], g[2])
    redis.call("SADD", P .. "limkeys:" .. q.instance, g[1])
    keys[#keys + 1] = g[1]
  end
  for _, key in ipairs(keys) do recompute_limit(P, key) end
  return 1

elseif op == "acquire" then
  local req, free_at = acquire_args()
  -- the wait's ticket: the caller's id for it, the same in each attempt (kept as text: it
  -- has more digits than a Lua number holds); the queue's order is the store's (wseq)
  local ticket = ARGV[5] ~= "" and ARGV[5] or ARGV[4]
  local permit_id, waiter_ttl = ARGV[4], tonumber(ARGV[7])
  -- a retry of a call whose reply was lost (redis-py resends it after a dropped connection):
  -- the permit exists already, so answer as before instead of granting a second one
  local earlier = redis.call("HGET", P .. "pm:" .. req.instance, permit_id)
  if earlier then return granted_reply(tonumber(string.match(earlier, "^%d+")), 0, 0, 0, 0) end
  -- refuse what can never be granted before changing anything (nothing released then)
  if redis.call("EXISTS", P .. "i:" .. req.instance) == 0 then return {"not_registered"} end
  local mine = {}
  for i, r in ipairs(req.rates) do
    local b, spec, tat = bucket_now(r[1], req.reports)
    if b == nil then return {"error", "no limit published for bucket " .. r[1]} end
    if r[2] > spec.burst then
      return {"impossible", r[2] .. " tokens requested from " .. r[1] .. " but its burst is "
        .. spec.burst}
    end
    mine[i] = {b, spec, tat}
  end
  local freed = free_permits(P, req.instance, free_at, nil)
  local limit, used, reserving, grace = {}, {}, 0, nil
  local gate = redis.call("HGETALL", P .. "gate")
  for i = 1, #gate, 2 do
    local field, n = gate[i], tonumber(gate[i + 1])
    local sort, g = string.sub(field, 1, 2), string.sub(field, 3)
    if sort == "l:" then limit[g] = n
    elseif sort == "u:" then used[g] = n
    elseif field == "reserving" then reserving = n
    elseif field == "grace" then grace = grace_until(P, now, n) end
  end
  local holders = {}
  if reserving > 0 or redis.call("ZCARD", P .. "waiters") > 0 then
    local instances, held, priorities = {}, {}, {}
    for _, id in ipairs(redis.call("SMEMBERS", P .. "ids")) do
      local v = redis.call("HMGET", P .. "i:" .. id, "reserved", "priority")
      if v[1] then
        instances[#instances + 1] = {id, tonumber(v[1]), tonumber(v[2])}
        priorities[#priorities + 1] = tonumber(v[2])
        held[id] = redis.call("HLEN", P .. "pm:" .. id)
      end
    end
    local total = limit[GLOBAL_GROUP] or BIG
    for _, inst in ipairs(instances) do
      holders[inst[1]] = {used = held[inst[1]], reserved = inst[2],
                          share = weighted_share(total, inst[3], priorities)}
    end
  end
  -- this wait's place in the queue (its score); nil: not queued yet, or its place was given
  -- up (it was away too long): it queues again at the back
  local place = tonumber(redis.call("ZSCORE", P .. "waiters", ticket))
  -- the live queue (silent waiters leave it). A queued wait within its instance's share
  -- yields only to earlier places (arbiter.lua's order), so only those are read: the rest of
  -- a long queue cannot change its answer.
  local me_holder = holders[req.instance]
  local queue
  if place ~= nil and me_holder ~= nil and me_holder.used < me_holder.share then
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
    if t ~= ticket then
      local w = redis.call("HMGET", P .. "w:" .. t, "instance", "rates", "slots", "seen")
      if tonumber(w[4]) < now - waiter_ttl then
        drop_waiter(P, t)
      else
        local rates = decode(w[2])
        for _, r in ipairs(rates) do keyset[r[1]] = true end
        waiters[#waiters + 1] = {instance_id = w[1], rates = rates, slots = decode(w[3]),
                                 ticket = order}
      end
    end
  end
  local specs, tats = {}, {}
  for i, r in ipairs(req.rates) do specs[r[1]], tats[r[1]] = mine[i][2], mine[i][3] end
  for key in pairs(keyset) do  -- the waiters' other buckets
    if specs[key] == nil then
      local b, spec, tat = bucket_now(key, req.reports)
      if b then specs[key], tats[key] = spec, tat end
    end
  end
  local me = {instance_id = req.instance, rates = req.rates, slots = req.slots, ticket = place}
  local cap = {tats = tats, specs = specs, group_used = used, group_limit = limit,
               holders = holders}
  local granted, at, slot_blocked, ahead, reason = arbitrate(me, waiters, cap, now)
  if grace ~= nil and (granted or at < grace) then  -- restarted empty: see restart.lua
    granted, at = false, math.max(at, grace)
    if not slot_blocked then
      reason = "the store restarted empty: waiting for the instances that were alive to "
        .. "re-declare their permits"
    end
  end
  -- the queue's length as the uncontended path reads it: exact whenever this path has run
  local function sync_waiting()
    redis.call("HSET", P .. "gate", "waiting", redis.call("ZCARD", P .. "waiters"))
  end
  if granted then
    if place ~= nil then drop_waiter(P, ticket) end
    sync_waiting()
    -- the slots freed here that this grant did not take, and the queue's length after it
    local queued = announce(P, freed - 1, req.instance)
    add_permit(P, req.instance, permit_id, now, req.record, req.kind)
    local reply
    for i, r in ipairs(req.rates) do
      local b, spec, tat = mine[i][1], mine[i][2], mine[i][3]
      local win, cur, prev = spend(P, now, r[1], r[2], spec.t, tat, bucket_numbers(b))
      if i == 1 then reply = granted_reply(now, win, cur, prev, b.per_minute) end
    end
    return reply .. struct.pack("<i8", queued)
  end
  announce(P, freed, req.instance)
  if ARGV[6] ~= "1" then
    sync_waiting()
    return {"none"}
  end
  if place == nil then
    place = redis.call("INCR", P .. "wseq")
    redis.call("ZADD", P .. "waiters", place, ticket)
    redis.call("HSET", P .. "w:" .. ticket, "instance", req.instance,
      "rates", cjson.encode(req.rates), "slots", cjson.encode(req.slots), "seen", now)
    redis.call("SADD", P .. "ww:" .. req.instance, ticket)
  else
    redis.call("HSET", P .. "w:" .. ticket, "seen", now)
  end
  sync_waiting()
  return {"waiting", ticket, at, slot_blocked and 1 or 0, ahead, reason, now, place}

elseif op == "cancel" then
  drop_waiter(P, tostring(q.ticket))
  return 1

elseif op == "adjust" then  -- q = {{key, delta}, ...}
  for _, c in ipairs(q) do
    local b = load_bucket(P, c[1])
    if b ~= nil and c[2] ~= 0 then
      local t = interval(b.per_minute)
      b.tat = c[2] < 0 and refund(b.tat, now, t, -c[2]) or consume(b.tat, now, t, c[2])
      b.cur = math.max(0, b.cur + c[2])
      save_bucket(P, b)
    end
  end
  return 1

elseif op == "reset" then  -- q = {all = true} or {keys = {...}}
  local keys = q.all and redis.call("SMEMBERS", P .. "bkeys") or q.keys
  local n = 0
  for _, key in ipairs(keys) do
    local b = load_bucket(P, key)
    if b ~= nil then
      b.lrate, b.reported_limit = nil, nil
      b.decreased_at, b.last_429, b.last_increase, b.cooldown_until = 0, 0, 0, 0
      save_bucket(P, b)
      n = n + 1
    end
  end
  return n
elseif op == "record" then
  -- q = {keys, granted, rate_limited, retry_after, reported = {{key, limit, remaining, reset}},
  --      policy = {enabled, reduction, recovery, min, max, max_cooldown (us)}}
  local reported = {}
  for _, r in ipairs(q.reported) do reported[r[1]] = {opt(r[2]), opt(r[3]), opt(r[4])} end
  local policy = q.policy
  local changes = {}
  for _, key in ipairs(q.keys) do
    local row = load_bucket(P, key)
    if row ~= nil then
      local before = {rate = row.lrate or row.per_minute, decreased_at = row.decreased_at,
                      last_429 = row.last_429, last_increase = row.last_increase,
                      cooldown_until = row.cooldown_until, reported_limit = row.reported_limit}
      local state, reason, new_tat = before, "", row.tat
      local ceiling = opt(policy.max) or row.per_minute
      local b = {floor = math.min(policy.min, ceiling), ceiling = ceiling,
                 reduction = policy.reduction, recovery = policy.recovery,
                 max_cooldown = policy.max_cooldown}
      if policy.enabled and reported[key] ~= nil then
        local limit, remaining, reset = reported[key][1], reported[key][2], reported[key][3]
        state = on_reported(state, b, now, limit, remaining, reset)
        reason = "limit stated by the provider"
        if remaining ~= nil then
          local _, burst, t, eff_tat = effective(row.per_minute, row.burst, row.tat, state.rate,
            state.cooldown_until, false)
          local synced = synced_tat(eff_tat, now, burst, t, remaining)
          if synced > eff_tat then new_tat = synced end
        end
      end
      if q.rate_limited and starts_with(key, "r:") then
        local lowered
        state, lowered = on_rate_limited(state, b, now, q.granted, opt(q.retry_after))
        if not policy.enabled then state.rate = before.rate end
        reason = (lowered and policy.enabled) and "429 error detected" or "429 (same epoch)"
      elseif policy.enabled and starts_with(key, "r:") then
        local used = windowed(row.win, row.cur, row.prev, now)
        local raised
        state, raised = on_success(state, b, now, used / math.max(state.rate, 1.0))
        if raised then reason = "recovered" end
      end
      local same = state.rate == before.rate and state.decreased_at == before.decreased_at
        and state.last_429 == before.last_429 and state.last_increase == before.last_increase
        and state.cooldown_until == before.cooldown_until
        and state.reported_limit == before.reported_limit
      if not (same and new_tat == row.tat and row.probed) then
        row.decreased_at, row.last_429 = state.decreased_at, state.last_429
        row.last_increase, row.cooldown_until = state.last_increase, state.cooldown_until
        row.tat, row.probed, row.reported_limit = new_tat, true, state.reported_limit
        if not (row.lrate == nil and state.rate == before.rate) then row.lrate = state.rate end
        save_bucket(P, row)
        if not same then
          changes[#changes + 1] = {key, string.format("%.17g", before.rate),
            string.format("%.17g", state.rate), state.cooldown_until, reason}
        end
      end
    end
  end
  return changes

elseif op == "dump" then  -- everything a snapshot shows, in one consistent read
  local buckets, usage = {}, {}
  for _, key in ipairs(redis.call("SMEMBERS", P .. "bkeys")) do
    local b = load_bucket(P, key)
    if b ~= nil then buckets[#buckets + 1] = {key, bucket_text(b)} end
    usage[#usage + 1] = {key, redis.call("HGETALL", P .. "u:" .. key)}
  end
  local permits = {}
  for _, id in ipairs(redis.call("SMEMBERS", P .. "ids")) do
    permits[#permits + 1] = {id, redis.call("HGETALL", P .. "pm:" .. id)}
  end
  return {now, buckets, redis.call("HGETALL", P .. "gate"), permits, usage,
          redis.call("ZCARD", P .. "waiters")}
end
return redis.error_reply("unknown operation " .. op)
