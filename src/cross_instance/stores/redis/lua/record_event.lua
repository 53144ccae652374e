-- needs: clock json limiter slots bucket permits queue registry
-- ARGV: prefix, now, kind, instance id or "", data JSON
local id = ARGV[4]
if id == "" then id = nil end
return add_event(ARGV[1], ARGV[3], id, ARGV[5])
