-- needs: clock limiter slots bucket admit
-- The uncontended acquire's decision for a JSON state, in acquire_at_once's order (tests only:
-- the differential test of admit.lua). rates: [key, cost, the bucket's numbers as unpacked];
-- gate: as HMGET reads it (null: absent); same: the permits of the request's kind it frees.
-- Returns 0 (the full path decides), or 1 and per bucket its new TAT and minute counts.
local q = cjson.decode(ARGV[1])
local found = {}
for k, r in ipairs(q.rates) do
  local t, tat = bucket_admits(r[3], r[1], r[2], q.reports, q.now)
  if t == nil then return {0} end
  found[k] = {r[3], t, tat, r[2]}
end
local gate = {}
for i, v in ipairs(q.gate) do gate[i] = v ~= cjson.null and v end
if contended(gate) or not slots_free(gate, q.same) then return {0} end
local out = {1}
for _, f in ipairs(found) do
  local win, cur, prev = take(q.now, f[4], f[2], f[3], f[1])
  out[#out + 1] = {f[1][3], win, cur, prev}
end
return out
