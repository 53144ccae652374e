-- needs: clock json limiter slots bucket permits queue registry ownership locks
-- ARGV: prefix, now (not read), resource, lock id. Reply: 1 if this call (or an earlier one of
-- the same lock id) freed the lock, else 0.
local P, res, lock_id = ARGV[1], ARGV[3], ARGV[4]
local l = load_lock(P, res)
if l == nil or l.lock_id ~= lock_id then  -- sent again after it freed the lock (its reply
  return redis.call("EXISTS", P .. "lr:" .. lock_id)  -- lost): the same answer, even if a
end  -- waiter has been granted the lock (or released it) since
free_lock(P, l.res, l.holder, l.token, "", false)
redis.call("SET", P .. "lr:" .. lock_id, "1", "PX", RELEASED_KEPT_MS)
return 1
