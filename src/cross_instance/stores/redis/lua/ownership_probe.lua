-- needs: ownership
-- Decide one claim from a JSON state (tests only: the differential test of ownership.lua's
-- decide). The workflow (null: never seen) and the caller as load_workflow and load_instance
-- read them; the owner's verdict, claim, auto_claim, force and the floor as claim_workflow
-- passes them.
local q = cjson.decode(ARGV[1])
local function opt(v) if v == cjson.null then return nil end return v end
local w = opt(q.w)
if w ~= nil then w.owner = opt(w.owner) end
local action, epoch, reason = decide(w, q.caller, opt(q.verdict), q.claim, q.auto_claim,
  q.force, q.floor)
return {action, epoch, reason}
