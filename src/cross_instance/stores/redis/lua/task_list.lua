-- needs: queue
-- ARGV: prefix, now, owner, "1" when the owner is given (else every owner's), state ("" for
-- every state: queued, then running, then done, then failed), limit.
-- Queued tasks in run order, running ones by lease end (then seq), done and failed ones the
-- latest first. Reply: the tasks, each {"task", field, value, ...}.
local P, limit = ARGV[1], tonumber(ARGV[6])
local owner = ARGV[4] == "1" and ARGV[3] or nil
local out = {}

local function by_finish(a, b)
  if a.fin ~= b.fin then return a.fin > b.fin end
  return a.seq > b.seq
end

local function keep(tasks, ordered)
  if ordered ~= nil then table.sort(tasks, ordered) end
  for _, t in ipairs(tasks) do
    if #out >= limit then return end
    out[#out + 1] = task_reply(t)
  end
end

local function load_all(ids)
  local tasks = {}
  for _, id in ipairs(ids) do
    local t = task_load(P, id)
    if t ~= nil then tasks[#tasks + 1] = t end
  end
  return tasks
end

local function queued(room)
  if owner ~= nil then
    keep(load_all(redis.call("ZRANGE", P .. "tq:" .. owner, 0, room - 1)))
    return
  end
  local heads = {}  -- the first ``room`` of every owner's queue, merged by score
  for _, o in ipairs(redis.call("ZRANGE", P .. "tbusy", 0, -1)) do
    local flat = redis.call("ZRANGE", P .. "tq:" .. o, 0, room - 1, "WITHSCORES")
    for i = 1, #flat, 2 do heads[#heads + 1] = {tonumber(flat[i + 1]), flat[i]} end
  end
  table.sort(heads, function(a, b) return a[1] < b[1] end)
  local ids = {}
  for i = 1, math.min(room, #heads) do ids[i] = heads[i][2] end
  keep(load_all(ids))
end

local function running(room)
  local ids
  if owner ~= nil then
    ids = redis.call("SMEMBERS", P .. "tr:" .. owner)
  else  -- the first ``room`` by lease end, and every other run ending when the last does
    local flat = redis.call("ZRANGE", P .. "tleases", 0, room - 1, "WITHSCORES")
    local seen = {}
    ids = {}
    for i = 1, #flat, 2 do
      ids[#ids + 1], seen[flat[i]] = flat[i], true
    end
    if #flat > 0 then
      local last = flat[#flat]
      for _, id in ipairs(redis.call("ZRANGEBYSCORE", P .. "tleases", last, last)) do
        if not seen[id] then ids[#ids + 1] = id end
      end
    end
  end
  keep(load_all(ids), by_lease)
end

-- The latest finished first, by (fin, seq) as the SQLite store orders them: read from the
-- latest until ``room`` are found (of the owner, when given: at most the kept ones are read),
-- and the rest of the ones settled in the same ms as the last found.
local function finished(key, room)
  local found, from, edge = {}, 0, nil
  while true do
    local flat = redis.call("ZREVRANGE", key, from, from + 499, "WITHSCORES")
    if #flat == 0 then return keep(found, by_finish) end
    for i = 1, #flat, 2 do
      local fin = tonumber(flat[i + 1])
      if edge ~= nil and fin < edge then return keep(found, by_finish) end
      if owner == nil or redis.call("HGET", P .. "t:" .. flat[i], "owner") == owner then
        local t = task_load(P, flat[i])
        if t ~= nil then found[#found + 1] = t end
        if #found >= room and edge == nil then edge = fin end
      end
    end
    from = from + 500
  end
end

local state = ARGV[5]
for _, s in ipairs({"queued", "running", "done", "failed"}) do
  if #out >= limit then break end
  if state == "" or state == s then
    local room = limit - #out
    if s == "queued" then queued(room)
    elseif s == "running" then running(room)
    elseif s == "done" then finished(P .. "tdone", room)
    else finished(P .. "tfailed", room) end
  end
end
return out
