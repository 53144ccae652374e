-- Incarnations of the data: a Redis that restarts without persistence comes back empty, and
-- nothing in it says which permits are still in flight or how much of a rate window was
-- spent. So an incarnation that follows lost data grants nothing for a grace (the "delayed
-- restart" rule of Redlock), long enough for every instance that was alive to notice,
-- register again and re-declare the permits it holds; and its rate buckets start as if a
-- full burst had just been spent (see ``restart_tat``). docs/redis-store.md, "Restarts".
-- Keys: P.."meta" hash: "born" (µs, when this incarnation's first registration came),
-- "declared" ("1": started by an operator who declared the prefix new and empty, so nothing
-- came before it), "floor" (ownership.lua). P.."gate" field "grace": µs until which nothing
-- is newly granted; present only while the grace has not been seen to end.

-- When this incarnation began and whether it follows lost data (the restart rules apply),
-- or nil if none has begun (nobody registered since the data was lost).
local function incarnation(P)
  local m = redis.call("HMGET", P .. "meta", "born", "declared")
  if not m[1] then return nil, true end
  return tonumber(m[1]), m[2] ~= "1"
end

-- A registration (with lease ``lease`` µs): begins the incarnation if none has begun, and
-- while the grace lasts makes it last until ``lease`` after the incarnation's start, so an
-- instance that notices the restart within its lease can still re-declare. Returns whether
-- the grace lasts (re-declared permits are kept only then).
local function on_register(P, now, lease)
  local born, lost = incarnation(P)
  if born == nil then
    -- meta or instances without a start: data of an earlier version of this package, not lost
    lost = redis.call("EXISTS", P .. "meta", P .. "ids") == 0
    born = now
    redis.call("HSET", P .. "meta", "born", now)
    if not lost then redis.call("HSET", P .. "meta", "declared", "1") end
    if lost then redis.call("HSET", P .. "gate", "grace", now + lease) end
    return lost
  end
  if not lost then return false end
  local grace = tonumber(redis.call("HGET", P .. "gate", "grace"))
  if grace == nil or now >= grace then return false end
  if born + lease > grace then redis.call("HSET", P .. "gate", "grace", born + lease) end
  return true
end

-- The end of the grace if it still lasts, else nil (and its gate field is removed, so the
-- uncontended acquire decides again).
local function grace_until(P, now, grace)
  grace = tonumber(grace)
  if grace == nil then return nil end
  if now < grace then return grace end
  redis.call("HDEL", P .. "gate", "grace")
  return nil
end

-- The TAT a bucket starts with. In an incarnation that follows lost data it is as if a full
-- burst had been spent when the incarnation began (or now, if none has: no registration yet),
-- which keeps ``burst + rate·W`` in every window W that spans the restart, with nobody
-- re-declaring what they spent. With interval t and burst b, GCRA admits a call at time a
-- only if TAT - a <= (b - 1)·t, and every admission moves TAT up by t. Starting from
-- TAT0 = s + b·t, the k-th admission of the new incarnation needs s + (b + k - 1)·t <=
-- a + (b - 1)·t, i.e. a >= s + k·t: by time y it admits at most (y - s)/t. A window
-- [x, x + W) that spans s holds at most b + (s - x)/t admissions of the old incarnation
-- (GCRA's own bound; everything it admitted was before the restart, so before s) and at
-- most (x + W - s)/t of the new one: b + W/t in all, burst + rate·W. Costs count the same
-- way (a call of cost c moves TAT by c·t). A bucket first used long after the restart
-- (s + b·t in the past) starts full, as it would have anyway.
local function restart_tat(P, now, burst, t)
  local born, lost = incarnation(P)
  if not lost then return 0 end
  return (born or now) + burst * t
end
