-- needs: bucket permits
-- ARGV: prefix, now (not read), buckets JSON [bucket, ...] or "" (every bucket): they forget
-- what they learned. Reply: how many buckets were reset.
local P = ARGV[1]
local keys = ARGV[3] == "" and redis.call("SMEMBERS", P .. "bkeys") or cjson.decode(ARGV[3])
local n = 0
for _, key in ipairs(keys) do n = n + forget_learned(P, key) end
return n
