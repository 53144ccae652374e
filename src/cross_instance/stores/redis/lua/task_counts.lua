-- needs:
-- ARGV: prefix, now. Per owner that ever held a task (queue.lua's keys): {owner, queued,
-- running, done, failed, steal attempts, steals, misses, waited ms (text), stolen from (µs)}.
local P, out = ARGV[1], {}
for _, o in ipairs(redis.call("SMEMBERS", P .. "towners")) do
  local v = redis.call("HMGET", P .. "to:" .. o, "queued", "running", "done", "failed",
    "attempts", "steals", "misses", "waited_ms", "stolen_from")
  local row = {o}
  for i = 1, 9 do row[i + 1] = v[i] or "0" end
  out[#out + 1] = row
end
return out
