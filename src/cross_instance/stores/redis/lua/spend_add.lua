-- needs: clock
-- ARGV: prefix, now, changes JSON [[key, nano, expires_us], ...] (numbers as text). Adds each
-- change to its key's total (hash P.."sp:"..key: "n" total nano-dollars, "e" expiry µs on the
-- store clock; a key past "e" counts from 0) and gives the key the later of the two expiries.
-- Every change is checked before anything is written, so an overflow changes nothing.
-- Reply: {"ok", total after each change, ...} (as text), or {"overflow", key, total}.
local P, now = ARGV[1], clock(ARGV[2])
local MAX = 9007199254740991  -- 2^53 - 1 (core/records.MAX_COUNT): exact in a Lua number
local state, order, reply = {}, {}, {"ok"}
for _, c in ipairs(cjson.decode(ARGV[3])) do
  local key, amount, expires = c[1], tonumber(c[2]), tonumber(c[3])
  local s = state[key]
  if s == nil then
    local h = redis.call("HMGET", P .. "sp:" .. key, "n", "e")
    s = {tonumber(h[1]) or 0, tonumber(h[2])}
    state[key] = s
    order[#order + 1] = key
  end
  if s[2] == nil or s[2] <= now then  -- never added, or forgotten: from 0
    s[1], s[2] = 0, expires
  elseif expires > s[2] then
    s[2] = expires
  end
  s[1] = s[1] + amount  -- both <= 2^53 - 1: a sum past MAX is >= 2^53 even rounded
  if s[1] > MAX then return {"overflow", key, string.format("%.0f", s[1])} end
  reply[#reply + 1] = string.format("%.0f", s[1])
end
for _, key in ipairs(order) do
  local s, name = state[key], P .. "sp:" .. key
  if s[2] > now then
    redis.call("HSET", name, "n", string.format("%.0f", s[1]), "e", string.format("%.0f", s[2]))
    redis.call("PEXPIRE", name, string.format("%.0f", math.ceil((s[2] - now) / 1000)))
  else
    redis.call("DEL", name)
  end
end
return reply
