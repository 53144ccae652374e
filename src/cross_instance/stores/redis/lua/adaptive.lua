-- Learning a provider's real limit (AIMD, cooldowns, stated limits): the twin of
-- core/adaptive.py (read its docstring for the rules), pinned to it by a differential property
-- test. Times in microseconds; rates are doubles, as Python floats are. Needs limiter.lua
-- (whose ``effective`` applies the learned state to a bucket's spec).
--
-- state = {rate, decreased_at, last_429, last_increase, cooldown_until, reported_limit or nil}
-- b = {floor, ceiling, reduction, recovery, max_cooldown}

local QUIET = 30000000
local RECOVER_EVERY = 5000000
local RECOVER_WHEN_USED = 0.8

local function clamp(b, rate) return math.min(b.ceiling, math.max(b.floor, rate)) end

local function copy(s)
  return {rate = s.rate, decreased_at = s.decreased_at, last_429 = s.last_429,
          last_increase = s.last_increase, cooldown_until = s.cooldown_until,
          reported_limit = s.reported_limit}
end

local function on_rate_limited(s, b, now, granted, retry_after)
  local new = copy(s)
  if retry_after ~= nil then
    new.cooldown_until = math.max(new.cooldown_until,
                                  now + math.min(math.max(0, retry_after), b.max_cooldown))
  end
  new.last_429 = math.max(s.last_429, now)
  if s.decreased_at ~= 0 and granted <= s.decreased_at then return new, false end
  local lowered = clamp(b, s.rate * b.reduction)
  new.rate, new.decreased_at = lowered, now
  return new, lowered < s.rate
end

local function on_success(s, b, now, utilisation)
  if utilisation < RECOVER_WHEN_USED or now - s.last_429 < QUIET
      or now - s.last_increase < RECOVER_EVERY or s.reported_limit ~= nil then
    return s, false
  end
  local raised = clamp(b, s.rate * b.recovery)
  if raised <= s.rate then return s, false end
  local new = copy(s)
  new.rate, new.last_increase = raised, now
  return new, true
end

local function on_reported(s, b, now, limit, remaining, reset)
  local new = copy(s)
  if limit ~= nil and limit > 0 then
    local rate = clamp(b, limit)
    if rate < s.rate then new.decreased_at = now end
    new.rate, new.reported_limit = rate, limit
  end
  if remaining == 0 and reset ~= nil then
    new.cooldown_until = math.max(new.cooldown_until,
                                  now + math.min(math.max(0, reset), b.max_cooldown))
  end
  return new
end

local function synced_tat(tat, now, burst, t, remaining)
  return math.max(tat, now + math.max(0, burst - remaining) * t)
end
