-- needs: ownership
-- ARGV: prefix, now (not read), workflow id, caller id, epoch. Whether the caller owns the
-- workflow at that epoch. Reply: {"ok"}, or {"stale", current epoch, current owner or ""}.
return fence(ARGV[1], ARGV[3], ARGV[4], tonumber(ARGV[5])) or {"ok"}
