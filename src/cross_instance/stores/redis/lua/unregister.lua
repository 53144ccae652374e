-- needs: clock json limiter slots bucket permits queue registry
-- ARGV: prefix, now, id
remove_instance(ARGV[1], ARGV[3], "instance_down", "unregistered")
return 1
