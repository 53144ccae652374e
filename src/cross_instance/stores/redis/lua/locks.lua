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
