-- needs: clock json limiter slots bucket permits queue registry ownership locks
-- ARGV: prefix, now (not read), ticket. The wait leaves its queue. Reply: 1.
drop_lock_waiter(ARGV[1], ARGV[3])
return 1
