-- needs: clock json limiter slots bucket permits queue registry ownership locks
-- ARGV: prefix, now, resource, lock id, ttl (µs). Reply: the lock, its expiry moved to now +
-- ttl, or {} if the caller does not hold it (any more).
local P, now, res, lock_id, ttl = ARGV[1], clock(ARGV[2]), ARGV[3], ARGV[4], tonumber(ARGV[5])
local l = load_lock(P, res)
if not can_renew(l, lock_id, now) then return {} end
l.expires = now + ttl
l.expires_wall = wall_ms() + math.floor(ttl / 1000)
redis.call("HSET", P .. "lock:" .. res, "expires", l.expires, "expires_wall", l.expires_wall)
return lock_reply(l)
