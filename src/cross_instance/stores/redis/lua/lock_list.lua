-- needs: clock json limiter slots bucket permits queue registry ownership locks
-- ARGV: prefix, now (not read). Reply: every held lock (as lock_reply), by resource.
local P = ARGV[1]
local out = {}
local resources = redis.call("SMEMBERS", P .. "locks")
table.sort(resources)
for _, res in ipairs(resources) do
  local l = load_lock(P, res)
  if l ~= nil then out[#out + 1] = lock_reply(l) end
end
return out
