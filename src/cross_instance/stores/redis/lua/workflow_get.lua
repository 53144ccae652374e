-- needs: ownership
-- ARGV: prefix, now (not read), workflow id. Reply: its record (workflow_reply; {}: none).
return workflow_reply(load_workflow(ARGV[1], ARGV[3]))
