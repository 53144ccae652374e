-- needs: clock json limiter slots bucket permits queue registry ownership locks
-- ARGV: prefix, now, here JSON, evidence JSON. Frees every lock that is expired or whose
-- holder is dead (why_free). Reply: the locks freed (as lock_reply), by resource.
local P, now = ARGV[1], clock(ARGV[2])
local here, evidence = cjson.decode(ARGV[3]), cjson.decode(ARGV[4])
local out = {}
local resources = redis.call("SMEMBERS", P .. "locks")
table.sort(resources)
for _, res in ipairs(resources) do
  local l = load_lock(P, res)
  if l ~= nil then
    local reason = why_free(P, l, now, here, evidence)
    if reason ~= "" then
      free_lock(P, res, l.holder, l.token, reason, true)
      out[#out + 1] = lock_reply(l)
    end
  end
end
return out
