-- needs: locks
-- Apply the lock rules of locks.lua to a JSON state (tests only: their differential test).
-- lock: the held lock (null: free) as load_lock reads it; verdict: its holder's (null: not
-- asked); first: the earliest waiting ticket (null: nobody waits); ticket: the caller's;
-- last: the resource's last token (0: none); floor: the data's floor; lock_id: a renewal's.
local q = cjson.decode(ARGV[1])
local function opt(v) if v == cjson.null then return nil end return v end
local l, floor_asked = opt(q.lock), 0
local reason = free_reason(l, q.now, opt(q.verdict))
local token = next_token(q.last, function() floor_asked = floor_asked + 1 return q.floor end)
return {reason, my_turn(opt(q.first), q.ticket) and 1 or 0, token, floor_asked,
        can_renew(l, q.lock_id, q.now) and 1 or 0}
