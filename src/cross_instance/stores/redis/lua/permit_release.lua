-- needs: slots
-- ARGV: prefix, now (not read), instance, the permits to free JSON (see free_permits in
-- slots.lua). Reply: {how many were freed, the queue's length}.
--
-- Decided with the held permits' library alone (see scripts.py): as a script, defining the
-- others would cost more than the release.
local P, instance = ARGV[1], ARGV[3]
local freed = free_permits(P, instance, cjson.decode(ARGV[4]), nil)
return {freed, announce(P, freed, instance)}
