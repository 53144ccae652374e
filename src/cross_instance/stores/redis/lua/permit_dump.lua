-- needs: clock bucket permits
-- ARGV: prefix, now. Everything a snapshot shows, in one consistent read: {now, buckets,
-- the gate hash flat, permits, usage, the queue's length} (see buckets_and_usage and
-- held_permits).
local P, now = ARGV[1], clock(ARGV[2])
local buckets, usage = buckets_and_usage(P)
return {now, buckets, redis.call("HGETALL", P .. "gate"), held_permits(P), usage,
        redis.call("ZCARD", P .. "waiters")}
