-- needs: ownership
-- ARGV: prefix, now (not read). Reply: every workflow, {id, its record (workflow_reply)} each.
local P = ARGV[1]
local out = {}
for _, id in ipairs(redis.call("SMEMBERS", P .. "wfids")) do
  out[#out + 1] = {id, workflow_reply(load_workflow(P, id))}
end
return out
