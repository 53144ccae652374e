-- TTL locks with fencing tokens on Redis (core/locking.py's rules). Keys: P.."lock:"..res
-- hash (lock_id, holder absent when free; token kept), P.."locks" set of held resources,
-- P.."hl:"..id resources an instance holds, P.."lq:"..res zset of waiting tickets (the
-- callers' ids for their waits, scored by arrival: P.."lockseq"), P.."lqt" ticket -> JSON
-- [res, instance] (never a separator: a name may hold any character), P.."lqseen" ticket ->
-- last seen (µs), P.."lw:"..id tickets an instance waits with. The lock hash's "wait" is the
-- ticket of the wait it was granted to. P.."lr:"..lock_id marks a lock id whose release freed
-- its lock, for a minute: a release sent again after its reply was lost answers as the first
-- did, even once a waiter holds the lock. Every key family ends in ":" and no fixed key starts
-- with one, so names that hold ":" (or anything else) never reach another family's key.

local RELEASED_KEPT_MS = 60000

local LOCK_FIELDS = {"lock_id", "holder", "token", "acquired", "expires", "acquired_wall",
                     "expires_wall", "wait"}

local function load_lock(P, res)  -- the held lock (or nil) and the resource's last token
  local v = redis.call("HMGET", P .. "lock:" .. res, unpack(LOCK_FIELDS))
  local last = tonumber(v[3]) or 0
  if not v[2] then return nil, last end
  return {res = res, lock_id = v[1], holder = v[2], token = last, acquired = tonumber(v[4]),
          expires = tonumber(v[5]), acquired_wall = tonumber(v[6]),
          expires_wall = tonumber(v[7]), wait = v[8]}, last
end

local function lock_reply(l)
  return {l.res, l.lock_id, l.holder, l.token, l.acquired, l.expires, l.acquired_wall,
          l.expires_wall}
end

-- core/locking.why_free: why the resource can be granted now ("" when it cannot: it is
-- held), given its holder's liveness verdict (nil when nobody asked it).
local function free_reason(l, now, holder_verdict)
  if l == nil then return "free" end
  if l.expires <= now then return "expired" end
  if holder_verdict == "dead" then return "holder dead" end
  return ""
end

local function why_free(P, l, now, here, evidence)  -- the holder is judged only if it matters
  if l == nil or l.expires <= now then return free_reason(l, now, nil) end
  local holder = load_instance(P, l.holder)
  return free_reason(l, now, holder == nil and "dead" or judge(holder, now, here, evidence))
end

-- First come, first served (the SQLite store's rule): a free resource goes to the caller only
-- when nobody waits for it or its earliest waiter is the caller's own wait (``ticket``).
local function my_turn(first, ticket) return first == nil or first == ticket end

-- The fencing token of a resource's next grant: one above its last (``last`` 0: never granted
-- in this incarnation of the data; then one above its floor, ``floor()``, asked only then).
local function next_token(last, floor)
  if last == 0 then last = floor() end
  return last + 1
end

local function can_renew(l, lock_id, now)  -- core/locking.can_renew
  return l ~= nil and l.lock_id == lock_id and l.expires > now
end

-- --- The steps of lock_acquire.lua -------------------------------------------------------
-- ``req``: {res, holder (the caller's id), ttl (µs), ticket (the caller's id for this wait, the
-- same in each attempt; kept as text), lock_id (the new lock's, chosen by the caller)}.

-- Waiters for ``res`` not seen since ``since`` (µs) leave its queue; the caller's own wait
-- (``ticket``) stays.
local function drop_silent_lock_waiters(P, res, ticket, since)
  for _, t in ipairs(redis.call("ZRANGE", P .. "lq:" .. res, 0, -1)) do
    local seen = tonumber(redis.call("HGET", P .. "lqseen", t))
    if t ~= ticket and (seen == nil or seen < since) then drop_lock_waiter(P, t) end
  end
end

-- Whether the held lock ``l`` is already the caller's: a resent call, or another attempt of
-- the wait it was granted to.
local function already_granted(l, req)
  return l ~= nil and (l.lock_id == req.lock_id
    or (l.wait == req.ticket and l.holder == req.holder))
end

-- The reply {"probe", id, pid, ticks} asking the caller to probe the holder of the unexpired
-- lock ``l`` when it runs on the caller's host and ``evidence`` does not describe it; else
-- nil.
local function holder_probe(P, l, now, here, evidence)
  if l == nil or l.expires <= now then return nil end
  local holder = load_instance(P, l.holder)
  if holder ~= nil and wants_probe(holder, now, here, evidence) then
    return {"probe", holder.id, holder.pid, holder.ticks}
  end
  return nil
end

-- The earliest waiting ticket for ``res`` (nil: nobody waits).
local function first_lock_waiter(P, res)
  return redis.call("ZRANGE", P .. "lq:" .. res, 0, 0)[1]
end

-- Grant ``req.res`` to the caller with the next fencing token (``current``: the lock it takes
-- over, freed for ``reason``; ``last``: the resource's last token); its wait leaves the queue.
-- Returns the new lock.
local function grant_lock(P, now, req, current, last, reason)
  local res, cid = req.res, req.holder
  if current ~= nil then free_lock(P, res, current.holder, current.token, reason, true) end
  local token = next_token(last, function() return floor_of(P, now) end)
  local wall = wall_ms()
  local l = {res = res, lock_id = req.lock_id, holder = cid, token = token, acquired = now,
             expires = now + req.ttl, acquired_wall = wall,
             expires_wall = wall + math.floor(req.ttl / 1000)}
  redis.call("HSET", P .. "lock:" .. res, "lock_id", l.lock_id, "holder", cid, "token",
    l.token, "acquired", l.acquired, "expires", l.expires, "acquired_wall", l.acquired_wall,
    "expires_wall", l.expires_wall, "wait", req.ticket)
  redis.call("SADD", P .. "locks", res)
  redis.call("SADD", P .. "hl:" .. cid, res)
  drop_lock_waiter(P, req.ticket)
  return l
end

-- The caller waits for ``req.res``: queued at the back on its first attempt (or once its
-- place was given up), and seen now.
local function queue_lock_wait(P, now, req)
  if redis.call("HEXISTS", P .. "lqt", req.ticket) == 0 then
    redis.call("ZADD", P .. "lq:" .. req.res, redis.call("INCR", P .. "lockseq"), req.ticket)
    redis.call("HSET", P .. "lqt", req.ticket, cjson.encode({req.res, req.holder}))
    redis.call("SADD", P .. "lw:" .. req.holder, req.ticket)
  end
  redis.call("HSET", P .. "lqseen", req.ticket, now)
end
