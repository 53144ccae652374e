-- needs: clock json limiter slots bucket permits queue registry
-- ARGV: prefix, now, id, provider, model, delta ("clear" drops them all)
local P, id = ARGV[1], ARGV[3]
local key = P .. "am:" .. id
if ARGV[6] == "clear" then redis.call("DEL", key) return 1 end
-- the field is the pair as JSON: any provider and model text, never split at a separator
-- (cjson writes the same pair the same way each time)
local field = cjson.encode({ARGV[4], ARGV[5]})
local delta = tonumber(ARGV[6])
local current = redis.call("HGET", key, field)
local count, since = 0, wall_ms()
if current then
  local sep = string.find(current, " ")
  count, since = tonumber(string.sub(current, 1, sep - 1)), string.sub(current, sep + 1)
end
if delta < 0 and not current then return 1 end
count = math.max(0, count + delta)
if count <= 0 then redis.call("HDEL", key, field)
else redis.call("HSET", key, field, count .. " " .. since) end
return 1
