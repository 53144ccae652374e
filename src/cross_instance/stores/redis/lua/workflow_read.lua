-- needs:
-- ARGV: prefix, now (not read), workflow id. Reply: its state, the hash flat (values as JSON
-- text).
local P = ARGV[1]
return redis.call("HGETALL", P .. "wfs:" .. ARGV[3])
