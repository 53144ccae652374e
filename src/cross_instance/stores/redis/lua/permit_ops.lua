-- needs: json limiter arbiter adaptive permits registry
-- ARGV: prefix, now, op, then one JSON argument for the op (see store.py).
local P, now, op = ARGV[1], clock(ARGV[2]), ARGV[3]
local q = cjson.decode(ARGV[4])

local function opt(v) if v == cjson.null then return nil end return v end

local function effective_spec(b, reports)
  local slow = reports and not b.probed and starts_with(b.key, "r:")
  local pm, burst, t, tat = effective(b.per_minute, b.burst, b.tat, b.lrate,
    b.cooldown_until, slow)
  return {burst = burst, t = t, per_minute = pm}, tat
end

-- Take the request's tokens (``mine[i]`` = {bucket, spec}, ``tats[i]`` its effective TAT)
-- and its slot; the permit is recorded under the caller's id.
local function grant(req, mine, tats, permit_id, ticket)
  local win = idiv(now, US_PER_MINUTE)
  local usage, lim = 0, 0
  for i, r in ipairs(req.rates) do
    local b, spec = mine[i][1], mine[i][2]
    local tat = consume(tats[i], now, spec.t, r[2])
    local cur, prev = b.cur, b.prev
    if b.win == win then cur = cur + r[2]
    elseif b.win == win - 1 then prev, cur = cur, r[2]
    else prev, cur = 0, r[2] end
    redis.call("HSET", P .. "b:" .. r[1], "tat", tat, "win", win, "cur", cur, "prev", prev)
    if i == 1 then usage, lim = windowed(win, cur, prev, now), b.per_minute end
  end
  redis.call("HSET", P .. "permits", permit_id, string.format(
    '{"granted":%d,"instance":%s,"model":%s,"provider":%s,"tokens":%d}', now,
    cjson.encode(req.instance), json_value(req.model), cjson.encode(req.provider), req.tokens))
  redis.call("SADD", P .. "pi:" .. req.instance, permit_id)
  for _, g in ipairs(permit_groups(req.provider, req.model)) do
    redis.call("INCR", P .. "used:" .. g)
  end
  if ticket ~= nil then drop_waiter(P, tostring(ticket)) end
  return {"granted", now, usage, lim}
end

if op == "publish" then  -- q = {instance, rates = {{key, per_minute, burst}}, groups = {{key, lim}}}
  local keys = {}
  for _, r in ipairs(q.rates) do
    redis.call("HSET", P .. "lim:" .. r[1], q.instance, r[2] .. " " .. r[3])
    if redis.call("EXISTS", P .. "b:" .. r[1]) == 0 then
      redis.call("HSET", P .. "b:" .. r[1], "per_minute", r[2], "burst", r[3], "tat", 0,
        "win", 0, "cur", 0, "prev", 0, "decreased_at", 0, "last_429", 0, "last_increase", 0,
        "cooldown_until", 0, "probed", 0)
      redis.call("SADD", P .. "bkeys", r[1])
    end
    redis.call("SADD", P .. "limkeys:" .. q.instance, r[1])
    keys[#keys + 1] = r[1]
  end
  for _, g in ipairs(q.groups) do
    redis.call("HSET", P .. "lim:" .. g[1], q.instance, g[2] .. " 0")
    if redis.call("SETNX", P .. "g:" .. g[1], g[2]) == 1 then
      redis.call("SADD", P .. "gkeys", g[1])
    end
    redis.call("SADD", P .. "limkeys:" .. q.instance, g[1])
    keys[#keys + 1] = g[1]
  end
  for _, key in ipairs(keys) do recompute_limit(P, key) end
  return 1

elseif op == "acquire" then
  -- q = {request = {instance, provider, model, rates, slots, tokens, reports}, ticket,
  --      queue, release = {ids}, waiter_ttl, permit_id}
  local req = q.request
  local ticket = opt(q.ticket)
  -- a retry of a call whose reply was lost (redis-py resends it after a dropped connection):
  -- the permit exists already, so answer as before instead of granting a second one
  local earlier = redis.call("HGET", P .. "permits", q.permit_id)
  if earlier then
    local p = cjson.decode(earlier)
    return {"granted", p.granted, 0, 0}
  end
  -- refuse what can never be granted before changing anything (nothing released then)
  if redis.call("EXISTS", P .. "i:" .. req.instance) == 0 then return {"not_registered"} end
  local mine = {}
  for i, r in ipairs(req.rates) do
    local b = load_bucket(P, r[1])
    if b == nil then return {"error", "no limit published for bucket " .. r[1]} end
    local spec, tat = effective_spec(b, req.reports)
    if r[2] > spec.burst then
      return {"impossible", r[2] .. " tokens requested from " .. r[1] .. " but its burst is "
        .. spec.burst}
    end
    mine[i] = {b, spec, tat}
  end
  for _, id in ipairs(q.release) do drop_permit(P, id) end
  -- the uncontended case (nobody queued, nothing reserved): decided from the request's own
  -- buckets and groups, as arbiter.fits_now, without loading the queue
  local fits = ticket == nil and redis.call("ZCARD", P .. "waiters") == 0
    and (tonumber(redis.call("GET", P .. "reserving")) or 0) <= 0
  for _, g in ipairs(fits and req.slots or {}) do
    local lim = tonumber(redis.call("GET", P .. "g:" .. g))
    if lim ~= nil and (tonumber(redis.call("GET", P .. "used:" .. g)) or 0) + 1 > lim then
      fits = false
    end
  end
  for i, r in ipairs(fits and req.rates or {}) do
    fits = fits and admits(mine[i][3], now, mine[i][2].burst, mine[i][2].t, r[2])
  end
  if fits then
    local tats = {}
    for i, r in ipairs(req.rates) do tats[i] = mine[i][3] end
    return grant(req, mine, tats, q.permit_id, nil)
  end
  -- the live queue (silent waiters leave it)
  local waiters, keyset = {}, {}
  for _, r in ipairs(req.rates) do keyset[r[1]] = true end
  local mine_queued = false
  for _, t in ipairs(redis.call("ZRANGE", P .. "waiters", 0, -1)) do
    local w = redis.call("HMGET", P .. "w:" .. t, "instance", "rates", "slots", "seen")
    local tn = tonumber(t)
    if tonumber(w[4]) < now - q.waiter_ttl and tn ~= ticket then
      drop_waiter(P, t)
    else
      local rates = cjson.decode(w[2])
      for _, r in ipairs(rates) do keyset[r[1]] = true end
      waiters[#waiters + 1] = {instance_id = w[1], rates = rates, slots = cjson.decode(w[3]),
                               ticket = tn}
      if tn == ticket then mine_queued = true end
    end
  end
  if not mine_queued then ticket = nil end  -- our place was given up: queue again at the back
  local specs, tats = {}, {}
  for i, r in ipairs(req.rates) do specs[r[1]], tats[r[1]] = mine[i][2], mine[i][3] end
  for key in pairs(keyset) do  -- the waiters' other buckets
    local b = specs[key] == nil and load_bucket(P, key)
    if b then specs[key], tats[key] = effective_spec(b, req.reports) end
  end
  local limit, used, held = {}, {}, {}
  for _, g in ipairs(redis.call("SMEMBERS", P .. "gkeys")) do
    limit[g] = tonumber(redis.call("GET", P .. "g:" .. g))
  end
  for g in pairs(limit) do used[g] = tonumber(redis.call("GET", P .. "used:" .. g)) or 0 end
  for _, w in ipairs(waiters) do
    for _, g in ipairs(w.slots) do
      used[g] = used[g] or tonumber(redis.call("GET", P .. "used:" .. g)) or 0
    end
  end
  for _, g in ipairs(req.slots) do
    used[g] = used[g] or tonumber(redis.call("GET", P .. "used:" .. g)) or 0
  end
  for _, id in ipairs(redis.call("SMEMBERS", P .. "ids")) do
    held[id] = redis.call("SCARD", P .. "pi:" .. id)
  end
  local holders = {}
  local instances, any_reserved = {}, false
  for _, id in ipairs(redis.call("SMEMBERS", P .. "ids")) do
    local v = redis.call("HMGET", P .. "i:" .. id, "reserved", "priority")
    if v[1] then
      instances[#instances + 1] = {id, tonumber(v[1]), tonumber(v[2])}
      if tonumber(v[1]) > 0 then any_reserved = true end
    end
  end
  if #waiters > 0 or any_reserved then
    local total = limit[GLOBAL_GROUP] or BIG
    local priorities = {}
    for i, inst in ipairs(instances) do priorities[i] = inst[3] end
    for _, inst in ipairs(instances) do
      holders[inst[1]] = {used = held[inst[1]] or 0, reserved = inst[2],
                          share = weighted_share(total, inst[3], priorities)}
    end
  end
  local me = {instance_id = req.instance, rates = req.rates, slots = req.slots, ticket = ticket}
  local cap = {tats = tats, specs = specs, group_used = used, group_limit = limit,
               holders = holders}
  local granted, at, slot_blocked, ahead, reason = arbitrate(me, waiters, cap, now)
  if granted then
    local list = {}
    for i, r in ipairs(req.rates) do list[i] = tats[r[1]] end
    return grant(req, mine, list, q.permit_id, ticket)
  end
  if not q.queue then return {"none"} end
  if ticket == nil then
    ticket = redis.call("INCR", P .. "wseq")
    redis.call("ZADD", P .. "waiters", ticket, ticket)
    redis.call("HSET", P .. "w:" .. ticket, "instance", req.instance,
      "rates", cjson.encode(req.rates), "slots", cjson.encode(req.slots), "seen", now)
    redis.call("SADD", P .. "ww:" .. req.instance, ticket)
  else
    redis.call("HSET", P .. "w:" .. ticket, "seen", now)
  end
  return {"waiting", ticket, at, slot_blocked and 1 or 0, ahead, reason, now}

elseif op == "cancel" then
  drop_waiter(P, tostring(q.ticket))
  return 1

elseif op == "release" then
  local n = 0
  for _, id in ipairs(q.ids) do n = n + drop_permit(P, id) end
  return n

elseif op == "adjust" then  -- q = {{key, delta}, ...}
  for _, c in ipairs(q) do
    local b = load_bucket(P, c[1])
    if b ~= nil and c[2] ~= 0 then
      local t = interval(b.per_minute)
      local tat = c[2] < 0 and refund(b.tat, now, t, -c[2]) or consume(b.tat, now, t, c[2])
      redis.call("HSET", P .. "b:" .. c[1], "tat", tat, "cur", math.max(0, b.cur + c[2]))
    end
  end
  return 1

elseif op == "reset" then  -- q = {all = true} or {keys = {...}}
  local keys = q.all and redis.call("SMEMBERS", P .. "bkeys") or q.keys
  local n = 0
  for _, key in ipairs(keys) do
    if redis.call("EXISTS", P .. "b:" .. key) == 1 then
      redis.call("HDEL", P .. "b:" .. key, "lrate", "reported_limit")
      redis.call("HSET", P .. "b:" .. key, "decreased_at", 0, "last_429", 0,
        "last_increase", 0, "cooldown_until", 0)
      n = n + 1
    end
  end
  return n
elseif op == "record" then
  -- q = {keys, granted, rate_limited, retry_after, reported = {{key, limit, remaining, reset}},
  --      policy = {enabled, reduction, recovery, min, max}}
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
                 reduction = policy.reduction, recovery = policy.recovery}
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
        local fields = {"decreased_at", state.decreased_at, "last_429", state.last_429,
          "last_increase", state.last_increase, "cooldown_until", state.cooldown_until,
          "tat", new_tat, "probed", 1}
        redis.call("HSET", P .. "b:" .. key, unpack(fields))
        if row.lrate == nil and state.rate == before.rate then
          redis.call("HDEL", P .. "b:" .. key, "lrate")
        else
          redis.call("HSET", P .. "b:" .. key, "lrate", string.format("%.17g", state.rate))
        end
        if state.reported_limit == nil then redis.call("HDEL", P .. "b:" .. key, "reported_limit")
        else redis.call("HSET", P .. "b:" .. key, "reported_limit", state.reported_limit) end
        if not same then
          changes[#changes + 1] = {key, string.format("%.17g", before.rate),
            string.format("%.17g", state.rate), state.cooldown_until, reason}
        end
      end
    end
  end
  return changes

elseif op == "dump" then  -- everything a snapshot shows, in one consistent read
  local buckets, groups, usage = {}, {}, {}
  for _, key in ipairs(redis.call("SMEMBERS", P .. "bkeys")) do
    buckets[#buckets + 1] = {key, redis.call("HGETALL", P .. "b:" .. key)}
    usage[#usage + 1] = {key, redis.call("HGETALL", P .. "u:" .. key)}
  end
  for _, key in ipairs(redis.call("SMEMBERS", P .. "gkeys")) do
    groups[#groups + 1] = {key, redis.call("GET", P .. "g:" .. key)}
  end
  return {now, buckets, groups, redis.call("HGETALL", P .. "permits"), usage,
          redis.call("ZCARD", P .. "waiters")}
end
return redis.error_reply("unknown operation " .. op)
