-- needs: clock json limiter adaptive
-- Apply one adaptive step to a JSON state (tests only: the differential test of adaptive.lua).
local q = cjson.decode(ARGV[1])
local function opt(v) if v == cjson.null then return nil end return v end
local function out(s, flag)
  return {string.format("%.17g", s.rate), s.decreased_at, s.last_429, s.last_increase,
          s.cooldown_until, s.reported_limit and tostring(s.reported_limit) or "none",
          flag and 1 or 0}
end
local s = q.state
if s ~= nil then s.reported_limit = opt(s.reported_limit) end
if q.op == "rate_limited" then
  return out(on_rate_limited(s, q.b, q.now, q.granted, opt(q.retry_after)))
elseif q.op == "success" then
  return out(on_success(s, q.b, q.now, q.utilisation))
elseif q.op == "reported" then
  return out(on_reported(s, q.b, q.now, opt(q.limit), opt(q.remaining), opt(q.reset)), false)
elseif q.op == "synced" then
  return synced_tat(q.tat, q.now, q.burst, interval(q.per_minute), q.remaining)
end
local pm, burst, t, tat = effective(q.per_minute, q.burst, q.tat, opt(q.learned_rate),
  q.cooldown_until, q.slow_start)
return {pm, burst, t, tat}
