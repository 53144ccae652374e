-- GCRA on the Redis server, the twin of cross_instance/core/limiter.py (pinned to it by a
-- differential property test). Lua numbers are doubles, exact for integers below 2^53, so
-- times are microseconds of the server clock (TIME), not nanoseconds; every quotient is
-- corrected to the exact integer one.

local TICKS_PER_MINUTE = 60000000

local function idiv(a, b)  -- floor(a / b) for integers, exact
  local q = math.floor(a / b)
  if q * b > a then q = q - 1 elseif (q + 1) * b <= a then q = q + 1 end
  return q
end

local function interval(per_minute)  -- rounded up: the rate never exceeds the spec
  local q = idiv(TICKS_PER_MINUTE, per_minute)
  if q * per_minute < TICKS_PER_MINUTE then q = q + 1 end
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
