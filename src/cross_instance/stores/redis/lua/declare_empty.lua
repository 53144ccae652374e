-- needs: clock
-- ARGV: prefix, now. An operator's word that this prefix is new and empty (no instance has
-- used it since the server started), so its first incarnation needs no restart grace and its
-- buckets start full (restart.lua). Refused (0) once anything has used the prefix: a grace
-- that has begun cannot be cut short.
local P, now = ARGV[1], clock(ARGV[2])
if redis.call("EXISTS", P .. "meta", P .. "ids", P .. "gate", P .. "bkeys") > 0 then return 0 end
redis.call("HSET", P .. "meta", "born", now, "declared", "1")
return 1
