-- GCRA on the Redis server, the twin of cross_instance/core/limiter.py, and the spec a bucket
-- enforces under learning and cooldowns (core/adaptive.effective); both pinned to the Python
-- core by differential property tests. Times in µs of the server clock. Needs clock.lua.

local function interval(per_minute)  -- rounded up: the rate never exceeds the spec
  local q = idiv(US_PER_MINUTE, per_minute)
  if q * per_minute < US_PER_MINUTE then q = q + 1 end
  return q
end

local function admits(tat, now, burst, t, cost)
  return math.max(tat, now) + cost * t - now <= burst * t
end

local function consume(tat, now, t, cost)
  return math.max(tat, now) + cost * t
end

local function ready_at(tat, now, burst, t, cost)
  return math.max(now, tat + (cost - burst) * t)
end

local function available(tat, now, burst, t)
  return math.max(0, idiv(burst * t - math.max(0, tat - now), t))
end

local function refund(tat, now, t, tokens)
  return math.max(now, tat - tokens * t)
end

-- The spec (per_minute, burst, interval) and TAT the limiter uses for a bucket.
local function effective(per_minute, burst, tat, learned_rate, cooldown_until, slow_start)
  if learned_rate ~= nil and learned_rate < per_minute then
    local pm = math.max(1, math.floor(learned_rate))
    burst = math.max(1, idiv(burst * pm, per_minute))
    per_minute = pm
  end
  if slow_start and burst > 1 then burst = 1 end
  local t = interval(per_minute)
  if cooldown_until ~= 0 then tat = math.max(tat, cooldown_until + (burst - 1) * t) end
  return per_minute, burst, t, tat
end
