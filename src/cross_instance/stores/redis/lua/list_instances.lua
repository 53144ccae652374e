-- needs: 
-- ARGV: prefix, now (not read), and optionally one instance id. Every instance record (or
-- that one) with its active models, in one consistent read.
local P = ARGV[1]
local out = {}
local ids = ARGV[3] and {ARGV[3]} or redis.call("SMEMBERS", P .. "ids")
for _, id in ipairs(ids) do
  local flat = redis.call("HGETALL", P .. "i:" .. id)
  if #flat > 0 then
    out[#out + 1] = {id, flat, redis.call("HGETALL", P .. "am:" .. id)}
  end
end
return out
