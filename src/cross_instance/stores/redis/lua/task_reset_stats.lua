-- needs:
-- ARGV: prefix, now, instance id, "1" when it is given (else every owner). Zeroes the
-- stealing stats (queue.lua's keys) of the owners that have counts.
local P = ARGV[1]
local owners = ARGV[4] == "1" and {ARGV[3]} or redis.call("SMEMBERS", P .. "towners")
for _, o in ipairs(owners) do
  if redis.call("EXISTS", P .. "to:" .. o) == 1 then
    redis.call("HSET", P .. "to:" .. o, "attempts", 0, "steals", 0, "misses", 0,
      "waited_ms", 0)
  end
end
return 1
