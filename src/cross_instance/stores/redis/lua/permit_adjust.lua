-- needs: clock limiter bucket permits
-- ARGV: prefix, now, changes JSON [[bucket, tokens], ...]: each bucket gives back (tokens < 0)
-- or takes what calls really used beyond their permits. Reply: 1.
local P, now = ARGV[1], clock(ARGV[2])
for _, c in ipairs(cjson.decode(ARGV[3])) do adjust_bucket(P, now, c[1], c[2]) end
return 1
