-- needs: ownership
-- ARGV: prefix, now (not read), workflow id, caller id, epoch, values JSON {key: the value as
-- JSON text} (kept as is). Written only while the caller owns the workflow at that epoch.
-- Reply: {"ok"}, or {"stale", current epoch, current owner or ""}.
local P, wid = ARGV[1], ARGV[3]
local stale = fence(P, wid, ARGV[4], tonumber(ARGV[5]))
if stale ~= nil then return stale end
for key, text in pairs(cjson.decode(ARGV[6])) do
  redis.call("HSET", P .. "wfs:" .. wid, key, text)
end
return {"ok"}
