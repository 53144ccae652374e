-- needs: queue registry
-- Judge one instance record (tests only: the differential test of registry.lua's judge).
-- ARGV: the record as JSON (as load_instance reads it), now (µs), then here and evidence as
-- the store sends them (JSON).
local rec = cjson.decode(ARGV[1])
return judge(rec, tonumber(ARGV[2]), cjson.decode(ARGV[3]), cjson.decode(ARGV[4]))
