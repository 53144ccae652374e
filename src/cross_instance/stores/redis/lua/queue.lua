-- The shared work queue on Redis: core/workqueue.py's rules, step for step as the SQLite
-- store's workqueue.py does them. An owner is an instance id, or "" for the shared pool (an
-- instance id is never empty). Keys (P = the prefix):
--   P.."t:"..id      task hash: id owner tool priority payload wall (enqueued, wall ms) seq
--                    attempts state fence max enq (enqueued, µs), lease (µs, while running),
--                    result, error, fin (the wall ms it was settled, once done or failed)
--   P.."tq:"..owner  zset of the owner's queued task ids by queue_score (run order; P.."tq:"
--                    alone is the pool's)
--   P.."tr:"..owner  set of the ids the owner runs
--   P.."tleases"     zset of the running ids by lease end (µs)
--   P.."to:"..owner  hash of the owner's counts (queued running done failed) and stealing
--                    stats (attempts steals misses waited_ms stolen_from (µs))
--   P.."towners"     set of every owner that ever held a task (queue_counts)
--   P.."tbusy"       zset owner -> queued, of the owners with tasks queued (steal victims)
--   P.."tdone", P.."tfailed"  zsets of finished ids by "fin": the latest TASKS_KEPT of
--                    each (by fin, then seq, as the SQLite store orders them) are kept
--   P.."tseq"        the enqueue sequence
-- Every step is a few lookups whatever the queues hold. Numbers go to redis.call as Lua
-- numbers (written exactly, "%.17g"), never joined into text ("%.14g" would round them).

local TASKS_KEPT = 10000  -- stores/base.FINISHED_KEPT

local function task_load(P, id)
  local flat = redis.call("HGETALL", P .. "t:" .. id)
  if #flat == 0 then return nil end
  local t = {}
  for i = 1, #flat, 2 do t[flat[i]] = flat[i + 1] end
  for _, k in ipairs({"priority", "wall", "seq", "attempts", "fence", "max", "enq", "lease",
                      "fin"}) do
    t[k] = tonumber(t[k])
  end
  return t
end

local function task_reply(t)  -- {"task", field, value, ...} (a field without value is absent)
  local out = {"task"}
  for k, v in pairs(t) do
    out[#out + 1] = k
    out[#out + 1] = v
  end
  return out
end

-- core/workqueue.may_settle: the run holding ``fence`` still runs ``t`` at ``now``, its lease
-- unended (one rule for renewing and settling).
local function task_holds(t, fence, now)
  return t.state == "running" and t.fence == fence and (t.lease or 0) > now
end

local function task_copy(t)
  local out = {}
  for k, v in pairs(t) do out[k] = v end
  return out
end

-- Add ``delta`` to the owner's count ``field`` (the owner is remembered; its queued count
-- also ranks it among the steal victims).
local function task_count(P, owner, field, delta)
  local n = redis.call("HINCRBY", P .. "to:" .. owner, field, delta)
  -- remembered when a count of its first rises from 0 (every owner's first count does)
  if delta > 0 and n == delta then redis.call("SADD", P .. "towners", owner) end
  if field == "queued" then
    if n > 0 then redis.call("ZADD", P .. "tbusy", n, owner)
    else redis.call("ZREM", P .. "tbusy", owner) end
  end
end

-- Task ``t`` as stored (queued or running) becomes ``after`` (the same task as a rule changed
-- it): out of its old state's index into its new one's, the owners' counts moved, the hash
-- written; a finished task is stamped with the wall ms, and the oldest finished beyond
-- TASKS_KEPT are forgotten (one for one: bounded work).
local function task_move(P, t, after)
  local id, state = t.id, after.state
  if t.state == "queued" then
    redis.call("ZREM", P .. "tq:" .. t.owner, id)
  else
    redis.call("SREM", P .. "tr:" .. t.owner, id)
    redis.call("ZREM", P .. "tleases", id)
  end
  task_count(P, t.owner, t.state, -1)
  local finished = nil
  if state == "queued" then
    redis.call("ZADD", P .. "tq:" .. after.owner,
      (1000 - after.priority) * 4398046511104 + after.seq, id)  -- queue_score
  elseif state == "running" then
    redis.call("SADD", P .. "tr:" .. after.owner, id)
    redis.call("ZADD", P .. "tleases", after.lease, id)
  else
    finished = state == "done" and P .. "tdone" or P .. "tfailed"
    after.fin = wall_ms()
    redis.call("ZADD", finished, after.fin, id)
  end
  task_count(P, after.owner, state, 1)
  local key, set, gone = P .. "t:" .. id, {"owner", after.owner, "state", state,
    "attempts", after.attempts, "fence", after.fence}, {}
  for _, k in ipairs({"lease", "result", "error", "fin"}) do
    if after[k] == nil then
      gone[#gone + 1] = k
    else
      set[#set + 1] = k
      set[#set + 1] = after[k]
    end
  end
  redis.call("HSET", key, unpack(set))
  if #gone > 0 then redis.call("HDEL", key, unpack(gone)) end
  local extra = finished and redis.call("ZCARD", finished) - TASKS_KEPT or 0
  if extra > 0 then  -- the oldest by (fin, seq): those settled in the same ms come by seq
    local old = redis.call("ZRANGE", finished, 0, extra - 1, "WITHSCORES")
    local seen, oldest, last = {}, {}, old[#old]
    for i = 1, #old, 2 do seen[old[i]] = true end
    for _, tid in ipairs(redis.call("ZRANGEBYSCORE", finished, last, last)) do
      if not seen[tid] then
        old[#old + 1] = tid
        old[#old + 1] = last
      end
    end
    for i = 1, #old, 2 do
      oldest[#oldest + 1] = {id = old[i], fin = tonumber(old[i + 1]),
                           seq = tonumber(redis.call("HGET", P .. "t:" .. old[i], "seq")) or 0}
    end
    table.sort(oldest, function(a, b)
      if a.fin ~= b.fin then return a.fin < b.fin end
      return a.seq < b.seq
    end)
    for i = 1, extra do
      redis.call("ZREM", finished, oldest[i].id)
      redis.call("DEL", P .. "t:" .. oldest[i].id)
    end
  end
end

local function by_lease(a, b)  -- runs by lease end, then seq (as the SQLite store's index)
  if a.lease ~= b.lease then return a.lease < b.lease end
  return a.seq < b.seq
end

local function task_head(P, owner)  -- the owner's next queued task (nil: none)
  local id = redis.call("ZRANGE", P .. "tq:" .. owner, 0, 0)[1]
  if id == nil then return nil end
  return task_load(P, id)
end

-- core/workqueue.start_run: the queued task ``t`` runs for ``runner`` until ``lease_end`` (µs).
local function task_start(P, t, runner, lease_end)
  local run = task_copy(t)
  run.owner, run.state, run.attempts, run.fence, run.lease =
    runner, "running", t.attempts + 1, t.fence + 1, lease_end
  task_move(P, t, run)
  return run
end

-- core/workqueue.after_lost_lease for the run ``t`` that lost its lease (``reason``): queued
-- again (under ``owner`` when given), or failed once its attempts are spent; a "task_lost"
-- event written by ``event`` (registry.lua's add_event, which this library comes before).
local function task_lose(P, t, owner, reason, event)
  local after = task_copy(t)
  after.owner, after.lease, after.fence = owner or t.owner, nil, t.fence + 1
  if t.attempts >= t.max then
    after.state = "failed"
    after.error = t.error or '"the lease was lost on every attempt"'
  else
    after.state = "queued"
  end
  task_move(P, t, after)
  event(P, "task_lost", t.owner, encode_flat({taskId = t.id, toolName = t.tool,
    attempts = after.attempts, state = after.state, owner = after.owner, reason = reason}))
end

-- Queue again (or fail) the runs whose lease ran out by ``now``, in lease order, the first
-- ``limit`` (nil: every one); how many.
local function task_requeue_expired(P, now, limit, event)
  local key, ids = P .. "tleases", nil
  if limit == nil then
    ids = redis.call("ZRANGEBYSCORE", key, "-inf", now)
  else
    ids = redis.call("ZRANGEBYSCORE", key, "-inf", now, "LIMIT", 0, limit)
    if #ids == limit then  -- the runs ending when the last one does may come before it
      local seen = {}
      for _, id in ipairs(ids) do seen[id] = true end
      local last = redis.call("ZSCORE", key, ids[#ids])
      for _, id in ipairs(redis.call("ZRANGEBYSCORE", key, last, last)) do
        if not seen[id] then ids[#ids + 1] = id end
      end
    end
  end
  local runs = {}
  for _, id in ipairs(ids) do
    local t = task_load(P, id)
    if t ~= nil and t.state == "running" then
      runs[#runs + 1] = t
    else
      redis.call("ZREM", key, id)  -- (never left behind by a step)
    end
  end
  table.sort(runs, by_lease)
  local n = math.min(#runs, limit or #runs)
  for i = 1, n do task_lose(P, runs[i], nil, "lease expired", event) end
  return n
end

-- The tasks of instance ``id``, gone (``reason``), go to the shared pool: its runs as lost
-- runs (in lease order), its queued tasks as they are (same place in run order).
local function task_hand_over(P, id, reason, event)
  local running = {}
  for _, tid in ipairs(redis.call("SMEMBERS", P .. "tr:" .. id)) do
    local t = task_load(P, tid)
    if t ~= nil then running[#running + 1] = t end
  end
  table.sort(running, by_lease)
  for _, t in ipairs(running) do task_lose(P, t, "", "instance " .. reason, event) end
  redis.call("DEL", P .. "tr:" .. id)
  local from, moved = P .. "tq:" .. id, 0
  while true do
    local chunk = redis.call("ZRANGE", from, 0, 999, "WITHSCORES")
    if #chunk == 0 then break end
    local args = {}
    for i = 1, #chunk, 2 do
      args[i], args[i + 1] = chunk[i + 1], chunk[i]
      redis.call("HSET", P .. "t:" .. chunk[i], "owner", "")
    end
    redis.call("ZADD", P .. "tq:", unpack(args))
    redis.call("ZREMRANGEBYRANK", from, 0, #chunk / 2 - 1)
    moved = moved + #chunk / 2
  end
  if moved > 0 then
    task_count(P, id, "queued", -moved)
    task_count(P, "", "queued", moved)
  end
end

-- core/workqueue.settle by the run holding ``fence`` at ``now``: the settled task's reply, or
-- {"none"} (the same report sent again gets the same task back; a run whose lease ended may
-- settle nothing, as it may renew nothing).
local function task_settle_step(P, now, id, fence, outcome, text)
  local t = task_load(P, id)
  if t == nil then return {"none"} end
  if t.fence == fence and t.state ~= "running" then
    local same
    if outcome == "done" then same = t.state == "done" and t.result == text
    elseif outcome == "failed" then same = t.state == "failed" and t.error == text
    else same = t.error == text and (t.state == "queued" or t.state == "failed") end
    if same then return task_reply(t) end
    return {"none"}
  end
  if not task_holds(t, fence, now) then return {"none"} end
  local after = task_copy(t)
  after.lease = nil
  if outcome == "done" then
    after.state, after.result = "done", text
  elseif outcome == "failed" or t.attempts >= t.max then
    after.state, after.error = "failed", text
  else
    after.state, after.error = "queued", text
  end
  task_move(P, t, after)
  return task_reply(after)
end

-- Queues again up to 50 runs whose lease ran out (the SQLite store's EXPIRED_PER_STEP), then
-- starts the next task in run order of ``id``'s queue and the shared pool's under a lease of
-- ``lease`` µs: its reply, {"none"} or {"not_registered"}.
local function task_take_step(P, now, id, lease, event)
  if redis.call("EXISTS", P .. "i:" .. id) == 0 then return {"not_registered"} end
  task_requeue_expired(P, now, 50, event)
  -- the heads of both queues by score (queue_score is the run order), then one task read
  local own = redis.call("ZRANGE", P .. "tq:" .. id, 0, 0, "WITHSCORES")
  local pool = redis.call("ZRANGE", P .. "tq:", 0, 0, "WITHSCORES")
  local best = own[1]
  if pool[1] ~= nil and (best == nil or tonumber(pool[2]) < tonumber(own[2])) then
    best = pool[1]
  end
  if best == nil then return {"none"} end
  return task_reply(task_start(P, task_load(P, best), id, now + lease))
end
