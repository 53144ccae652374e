-- needs: clock limiter
-- Evaluate every limiter function for one input (tests only: the differential test).
local per_minute, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local tat, now, cost, tokens = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]),
  tonumber(ARGV[6])
local t = interval(per_minute)
return {t, admits(tat, now, burst, t, cost) and 1 or 0, consume(tat, now, t, cost),
        ready_at(tat, now, burst, t, cost), available(tat, now, burst, t),
        refund(tat, now, t, tokens)}
