-- The instance registry on Redis: records, liveness, removal with everything held, events.
-- Keys (P = the prefix): P.."ids" set of instance ids; P.."i:"..id hash (the record);
-- P.."am:"..id hash JSON [provider, model] -> "count since_wall_ms"; P.."events" zset by id,
-- P.."evseq" the last event id. Times in microseconds. A removed instance's tasks go to the
-- shared pool (queue.lua, defined before this library: it writes events with add_event).

-- The event log is bounded: every EVENTS_TRIM_EVERY-th event removes those more than
-- EVENTS_KEPT older, so it holds at most EVENTS_KEPT + EVENTS_TRIM_EVERY (as the SQLite store).
local EVENTS_KEPT = 10000
local EVENTS_TRIM_EVERY = 256
local UNKNOWN_BOOT = "unknown-boot"  -- core/liveness.UNKNOWN_BOOT: the system told no boot id

local function add_event(P, kind, instance_id, data_json)
  local id = redis.call("INCR", P .. "evseq")
  local event = encode_flat({id = id, wall_ms = wall_ms(), kind = kind,
                              instance_id = instance_id or cjson.null})
  -- data is already JSON text: splice it in so its key order is kept as written
  event = string.sub(event, 1, -2) .. ',"data":' .. data_json .. "}"
  redis.call("ZADD", P .. "events", id, event)
  if id % EVENTS_TRIM_EVERY == 0 then
    redis.call("ZREMRANGEBYSCORE", P .. "events", "-inf", id - EVENTS_KEPT)
  end
  return id
end

local function load_instance(P, id)
  local flat = redis.call("HGETALL", P .. "i:" .. id)
  if #flat == 0 then return nil end
  local rec = {id = id}
  for i = 1, #flat, 2 do rec[flat[i]] = flat[i + 1] end
  for _, k in ipairs({"pid", "ticks", "hb_us", "lease_us"}) do rec[k] = tonumber(rec[k]) end
  return rec
end

local function same_domain(rec, here)  -- on the caller's host, boot and pid namespace
  return rec.host == here.host and rec.boot == here.boot and rec.pidns == here.pidns
end

local function describes(e, rec)  -- evidence ``e`` is about this very process
  return e ~= nil and tonumber(e.pid) == rec.pid and tonumber(e.ticks) == rec.ticks
end

-- Whether the caller's pid probe of ``rec`` would decide its liveness (a record on its own
-- host, within its lease, not yet in ``evidence``).
local function wants_probe(rec, now, here, evidence)
  return now - rec.hb_us <= rec.lease_us and same_domain(rec, here)
    and not describes(evidence[rec.id], rec)
end

-- core/liveness.judge, with the pid probe done by the caller (evidence[id] = {pid, ticks,
-- probe}) and used only if it describes this very record.
local function judge(rec, now, here, evidence)
  if now - rec.hb_us > rec.lease_us then return "dead" end
  if same_domain(rec, here) then
    local e = evidence[rec.id]
    if describes(e, rec) then
      if e.probe == "missing" or e.probe == "reused" then return "dead" end
      if e.probe == "same" then return "alive" end
    end
    return "unknown"
  end
  if rec.host == here.host and rec.boot ~= here.boot and rec.boot ~= UNKNOWN_BOOT
      and here.boot ~= UNKNOWN_BOOT then
    return "dead"  -- recorded before this host rebooted (never said when a boot is unknown)
  end
  return "alive"
end

local function drop_lock_waiter(P, ticket)
  local entry = redis.call("HGET", P .. "lqt", ticket)
  if not entry then return end
  local ok, pair = pcall(cjson.decode, entry)
  if not ok or type(pair) ~= "table" then  -- an entry an earlier version wrote: "res\tinstance"
    local sep = string.find(entry, "\t[^\t]*$")  -- (its instance ids hold no tab)
    pair = {string.sub(entry, 1, sep - 1), string.sub(entry, sep + 1)}
  end
  local res, inst = pair[1], pair[2]
  redis.call("ZREM", P .. "lq:" .. res, ticket)
  redis.call("HDEL", P .. "lqt", ticket)
  redis.call("HDEL", P .. "lqseen", ticket)
  redis.call("SREM", P .. "lw:" .. inst, ticket)
end

-- Free a held lock (the token stays with the resource, so it is never handed out twice).
local function free_lock(P, res, holder, token, reason, event)
  redis.call("HDEL", P .. "lock:" .. res, "holder", "lock_id", "wait")
  redis.call("SREM", P .. "locks", res)
  redis.call("SREM", P .. "hl:" .. holder, res)
  if event then
    add_event(P, "lock_lost", holder, encode_flat({reason = reason, resource = res,
                                                     token = tonumber(token)}))
  end
end

local function remove_instance(P, id, kind, reason)
  for _, res in ipairs(redis.call("SMEMBERS", P .. "hl:" .. id)) do
    local held = redis.call("HMGET", P .. "lock:" .. res, "holder", "token")
    if held[1] == id then free_lock(P, res, id, held[2], "holder " .. reason, true) end
  end
  redis.call("DEL", P .. "hl:" .. id)
  for _, ticket in ipairs(redis.call("SMEMBERS", P .. "lw:" .. id)) do
    drop_lock_waiter(P, ticket)
  end
  drop_holdings(P, id)
  task_hand_over(P, id, reason, add_event)  -- its tasks go to the shared pool (queue.lua)
  local reserved = tonumber(redis.call("HGET", P .. "i:" .. id, "reserved"))
  if reserved ~= nil and reserved > 0 then
    redis.call("HINCRBY", P .. "gate", "reserving", -1)
  end
  redis.call("DEL", P .. "am:" .. id)
  local gone = redis.call("DEL", P .. "i:" .. id) > 0
  redis.call("SREM", P .. "ids", id)
  if gone then add_event(P, kind, id, encode_flat({reason = reason})) end
  return gone
end
