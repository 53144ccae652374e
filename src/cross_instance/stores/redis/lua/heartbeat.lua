-- needs: clock json limiter slots bucket permits queue registry
-- ARGV: prefix, now, id, workload JSON or ""
local P, now, id = ARGV[1], clock(ARGV[2]), ARGV[3]
local key = P .. "i:" .. id
if redis.call("EXISTS", key) == 0 then return 0 end
redis.call("HSET", key, "hb_us", now, "hb_wall_ms", wall_ms())
if ARGV[4] ~= "" then
  local w = cjson.decode(ARGV[4])
  redis.call("HSET", key, "pending", w.pending, "latency", w.latency, "orch", w.orch)
end
if ARGV[5] ~= nil and ARGV[5] ~= "" then  -- usage per bucket over the last minute
  local win = idiv(now, US_PER_MINUTE)
  for key, n in pairs(cjson.decode(ARGV[5])) do
    redis.call("HSET", P .. "u:" .. key, id, win .. " " .. n)
    redis.call("SADD", P .. "ukeys:" .. id, key)
  end
end
return 1
