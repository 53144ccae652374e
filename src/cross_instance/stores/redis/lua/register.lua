-- needs: clock restart json limiter slots bucket permits queue registry
-- ARGV: prefix, now (µs or ""), record JSON, here JSON, evidence JSON, and the permits the
-- instance still holds ("" or a JSON list of [permit id as text, granted µs, tokens, kind]):
-- when it registers again within a restart's grace they are kept (restart.lua).
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
local grace = on_register(P, now, tonumber(r.lease_us))
redis.call("HSET", P .. "i:" .. r.id, "host", r.host, "boot", r.boot, "pidns", r.pidns,
  "pid", r.pid, "ticks", r.ticks, "session", r.session, "cwd", r.cwd,
  "started_wall_ms", r.started_wall_ms, "started_us", now, "hb_us", now,
  "hb_wall_ms", wall_ms(), "lease_us", r.lease_us, "priority", r.priority,
  "reserved", r.reserved, "pending", r.pending, "latency", r.latency, "orch", r.orch)
redis.call("SADD", P .. "ids", r.id)
if tonumber(r.reserved) > 0 then redis.call("HINCRBY", P .. "gate", "reserving", 1) end
add_event(P, "instance_up", r.id, encode_flat({host = r.host, pid = r.pid}))
local kept = 0
if grace and ARGV[6] ~= nil and ARGV[6] ~= "" then  -- they occupy their slots again
  for _, p in ipairs(cjson.decode(ARGV[6])) do
    if redis.call("HEXISTS", P .. "pm:" .. r.id, p[1]) == 0 then
      add_permit(P, r.id, p[1], p[2], string.format(" %d ", p[3]) .. p[4], p[4])
      kept = kept + 1
    end
  end
  add_event(P, "permits_redeclared", r.id, encode_flat({count = kept}))
end
return {"ok", now, kept}
