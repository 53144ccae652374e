-- needs: permits
-- ARGV: prefix, now (not read), ticket (as text). The wait leaves the queue. Reply: 1.
drop_waiter(ARGV[1], ARGV[3])
return 1
