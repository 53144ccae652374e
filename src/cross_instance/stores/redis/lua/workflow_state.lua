-- needs: clock json limiter slots bucket permits registry ownership
-- ARGV: prefix, now, op ("write" | "validate" | "read" | "get" | "list"), workflow id,
-- caller id, epoch, values JSON (write)
local P, op, wid = ARGV[1], ARGV[3], ARGV[4]
if op == "read" then return redis.call("HGETALL", P .. "wfs:" .. wid) end
if op == "get" then return workflow_reply(load_workflow(P, wid)) end
if op == "list" then
  local out = {}
  for _, id in ipairs(redis.call("SMEMBERS", P .. "wfids")) do
    out[#out + 1] = {id, workflow_reply(load_workflow(P, id))}
  end
  return out
end
local stale = fence(P, wid, ARGV[5], tonumber(ARGV[6]))
if stale ~= nil then return stale end
if op == "write" then
  for key, text in pairs(cjson.decode(ARGV[7])) do  -- values arrive as JSON text, kept as is
    redis.call("HSET", P .. "wfs:" .. wid, key, text)
  end
end
return {"ok"}
