-- Time on the Redis server: one clock for every host. Lua numbers are doubles, exact for
-- integers below 2^53, so times are microseconds (TIME), not nanoseconds, and every quotient
-- is corrected to the exact integer one.

local US_PER_MINUTE = 60000000

local function clock(arg)  -- the injected test clock (µs) or the server's
  if arg ~= nil and arg ~= "" then return tonumber(arg) end
  local t = redis.call("TIME")
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

local function wall_ms()
  local t = redis.call("TIME")
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function idiv(a, b)  -- floor(a / b) for integers, exact
  local q = math.floor(a / b)
  if q * b > a then q = q - 1 elseif (q + 1) * b <= a then q = q + 1 end
  return q
end

local function round_half_even(x)
  local f = math.floor(x)
  local d = x - f
  if d > 0.5 then return f + 1 elseif d < 0.5 then return f end
  if f % 2 == 0 then return f end
  return f + 1
end

local function windowed(win, cur, prev, now)  -- core/window.windowed in µs
  local this_win = idiv(now, US_PER_MINUTE)
  if win == this_win - 1 then cur, prev = 0, cur
  elseif win ~= this_win then return 0 end
  local frac = (now - this_win * US_PER_MINUTE) / US_PER_MINUTE
  return round_half_even(cur + prev * (1.0 - frac))
end
