-- needs: clock limiter bucket adaptive permits
-- ARGV: prefix, now, buckets JSON [bucket, ...] (the call's), granted (µs, the permit's grant
-- time), rate limited 1/0, retry after (µs) or "", reported JSON [[bucket, limit, remaining,
-- reset (µs)], ...] (null where not stated), policy JSON {enabled, reduction, recovery, min,
-- max (null: none), max_cooldown (µs)}. What one call's outcome teaches each bucket
-- (adaptive.lua). Reply: the changes, {bucket, rate before, rate after, cooldown end, reason}
-- each.
local P, now = ARGV[1], clock(ARGV[2])
local outcome = {granted = tonumber(ARGV[4]), rate_limited = ARGV[5] == "1",
                 retry_after = ARGV[6] ~= "" and tonumber(ARGV[6]) or nil}
local stated, policy = stated_limits(cjson.decode(ARGV[7])), cjson.decode(ARGV[8])
local changes = {}
for _, key in ipairs(cjson.decode(ARGV[3])) do
  local change = learn(P, now, key, outcome, stated[key], policy)
  if change ~= nil then changes[#changes + 1] = change end
end
return changes
