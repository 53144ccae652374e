-- needs: 
-- ARGV: prefix. Every instance record with its active models, in one consistent read.
local P = ARGV[1]
local out = {}
for _, id in ipairs(redis.call("SMEMBERS", P .. "ids")) do
  local flat = redis.call("HGETALL", P .. "i:" .. id)
  if #flat > 0 then
    out[#out + 1] = {id, flat, redis.call("HGETALL", P .. "am:" .. id)}
  end
end
return out
