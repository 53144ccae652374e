-- needs: clock json limiter slots bucket permits registry
-- ARGV: prefix, now (µs or ""), record JSON, here JSON, evidence JSON
local P, now = ARGV[1], clock(ARGV[2])
local r, here, evidence = cjson.decode(ARGV[3]), cjson.decode(ARGV[4]), cjson.decode(ARGV[5])
local existing = load_instance(P, r.id)
if existing ~= nil then
  local verdict = judge(existing, now, here, evidence)
  local same = existing.pid == r.pid and existing.ticks == r.ticks and existing.host == r.host
    and existing.boot == r.boot and existing.pidns == r.pidns
  if verdict ~= "dead" and not same then
    return {"duplicate", existing.pid, existing.host}
  end
  remove_instance(P, r.id, "instance_replaced", "replaced (" .. verdict .. ")")
end
redis.call("HSET", P .. "i:" .. r.id, "host", r.host, "boot", r.boot, "pidns", r.pidns,
  "pid", r.pid, "ticks", r.ticks, "session", r.session, "cwd", r.cwd,
  "started_wall_ms", r.started_wall_ms, "started_us", now, "hb_us", now,
  "hb_wall_ms", wall_ms(), "lease_us", r.lease_us, "priority", r.priority,
  "reserved", r.reserved, "pending", r.pending, "latency", r.latency, "orch", r.orch)
redis.call("SADD", P .. "ids", r.id)
if tonumber(r.reserved) > 0 then redis.call("HINCRBY", P .. "gate", "reserving", 1) end
add_event(P, "instance_up", r.id, encode_flat({host = r.host, pid = r.pid}))
return {"ok", now}
