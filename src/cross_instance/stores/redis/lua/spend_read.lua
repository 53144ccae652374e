-- needs: clock
-- ARGV: prefix, now, keys JSON [key, ...]. Reply: each key's total (text), "0" for a key
-- never added to or past its expiry (spend_add.lua).
local P, now = ARGV[1], clock(ARGV[2])
local reply = {}
for i, key in ipairs(cjson.decode(ARGV[3])) do
  local h = redis.call("HMGET", P .. "sp:" .. key, "n", "e")
  local e = tonumber(h[2])
  if h[1] and e ~= nil and e > now then reply[i] = h[1] else reply[i] = "0" end
end
return reply
