-- needs: clock json limiter slots bucket permits registry ownership locks
-- ARGV: prefix, now, op, then per op:
--   acquire: res, caller, ttl, ticket (the caller's id for this wait, the same in each
--            attempt; kept as text), wait 0/1, waiter ttl, new lock id, here, evidence,
--            may ask 0/1 (reply {"probe", id, pid, ticks} when the lock is held by a process
--            on the caller's host that ``evidence`` does not describe: the caller probes it
--            and calls again, so it need not list every instance for each attempt)
--   renew: res, lock id, ttl | release: res, lock id | cancel: ticket
--   list | cleanup: here, evidence
local P, now, op = ARGV[1], clock(ARGV[2]), ARGV[3]
if op == "acquire" then
  local res, cid, ttl, ticket = ARGV[4], ARGV[5], tonumber(ARGV[6]), ARGV[7]
  if load_instance(P, cid) == nil then return {"not_registered"} end
  for _, t in ipairs(redis.call("ZRANGE", P .. "lq:" .. res, 0, -1)) do
    local seen = tonumber(redis.call("HGET", P .. "lqseen", t))
    if t ~= ticket and (seen == nil or seen < now - tonumber(ARGV[9])) then
      drop_lock_waiter(P, t)
    end
  end
  local here, evidence = cjson.decode(ARGV[11]), cjson.decode(ARGV[12])
  local current, last = load_lock(P, res)
  if current ~= nil and (current.lock_id == ARGV[10]  -- a resent call, or another attempt
      or (current.wait == ticket and current.holder == cid)) then  -- of a wait: granted
    return {"granted", lock_reply(current)}
  end
  if ARGV[13] == "1" and current ~= nil and current.expires > now then
    local holder = load_instance(P, current.holder)
    if holder ~= nil and wants_probe(holder, now, here, evidence) then
      return {"probe", holder.id, holder.pid, holder.ticks}
    end
  end
  local reason = why_free(P, current, now, here, evidence)
  local first = redis.call("ZRANGE", P .. "lq:" .. res, 0, 0)[1]
  if reason ~= "" and my_turn(first, ticket) then
    if current ~= nil then free_lock(P, res, current.holder, current.token, reason, true) end
    local token = next_token(last, function() return floor_of(P, now) end)
    local wall = wall_ms()
    local l = {res = res, lock_id = ARGV[10], holder = cid, token = token, acquired = now,
               expires = now + ttl, acquired_wall = wall,
               expires_wall = wall + math.floor(ttl / 1000)}
    redis.call("HSET", P .. "lock:" .. res, "lock_id", l.lock_id, "holder", cid, "token",
      l.token, "acquired", l.acquired, "expires", l.expires, "acquired_wall", l.acquired_wall,
      "expires_wall", l.expires_wall, "wait", ticket)
    redis.call("SADD", P .. "locks", res)
    redis.call("SADD", P .. "hl:" .. cid, res)
    drop_lock_waiter(P, ticket)
    return {"granted", lock_reply(l)}
  end
  if ARGV[8] ~= "1" then return {"none"} end
  if redis.call("HEXISTS", P .. "lqt", ticket) == 0 then  -- its first attempt (or its place
    -- was given up): at the back
    redis.call("ZADD", P .. "lq:" .. res, redis.call("INCR", P .. "lockseq"), ticket)
    redis.call("HSET", P .. "lqt", ticket, cjson.encode({res, cid}))
    redis.call("SADD", P .. "lw:" .. cid, ticket)
  end
  redis.call("HSET", P .. "lqseen", ticket, now)
  local held = reason == "" and current ~= nil
  return {"waiting", ticket, held and current.expires or now,
          held and current.holder or "", now}
elseif op == "renew" then
  local l = load_lock(P, ARGV[4])
  if not can_renew(l, ARGV[5], now) then return {} end
  l.expires = now + tonumber(ARGV[6])
  l.expires_wall = wall_ms() + math.floor(tonumber(ARGV[6]) / 1000)
  redis.call("HSET", P .. "lock:" .. ARGV[4], "expires", l.expires, "expires_wall",
    l.expires_wall)
  return lock_reply(l)
elseif op == "release" then
  local l = load_lock(P, ARGV[4])
  if l == nil or l.lock_id ~= ARGV[5] then  -- sent again after it freed the lock (its reply
    return redis.call("EXISTS", P .. "lr:" .. ARGV[5])  -- lost): the same answer, even if a
  end  -- waiter has been granted the lock (or released it) since
  free_lock(P, l.res, l.holder, l.token, "", false)
  redis.call("SET", P .. "lr:" .. ARGV[5], "1", "PX", RELEASED_KEPT_MS)
  return 1
elseif op == "cancel" then
  drop_lock_waiter(P, ARGV[4])
  return 1
end
local here, evidence = nil, nil
if op == "cleanup" then here, evidence = cjson.decode(ARGV[4]), cjson.decode(ARGV[5]) end
local out = {}
local resources = redis.call("SMEMBERS", P .. "locks")
table.sort(resources)
for _, res in ipairs(resources) do
  local l = load_lock(P, res)
  if l ~= nil then
    if op == "list" then
      out[#out + 1] = lock_reply(l)
    else
      local reason = why_free(P, l, now, here, evidence)
      if reason ~= "" then
        free_lock(P, res, l.holder, l.token, reason, true)
        out[#out + 1] = lock_reply(l)
      end
    end
  end
end
return out
