-- needs: clock restart limiter bucket permits
-- ARGV: prefix, now, instance, rates JSON [[bucket, per minute, burst], ...], slot groups JSON
-- [[group, limit], ...]: the limits the instance publishes; each key's effective limit is the
-- strictest published (recompute_limit). Reply: 1.
local P, now, instance = ARGV[1], clock(ARGV[2]), ARGV[3]
local keys = {}
for _, r in ipairs(cjson.decode(ARGV[4])) do
  publish_rate(P, now, instance, r[1], r[2], r[3])
  keys[#keys + 1] = r[1]
end
for _, g in ipairs(cjson.decode(ARGV[5])) do
  publish_group(P, instance, g[1], g[2])
  keys[#keys + 1] = g[1]
end
for _, key in ipairs(keys) do recompute_limit(P, key) end
return 1
