-- Held permits, and the gate the uncontended acquire checks in one read. Every path that
-- grants or frees a permit goes through here (the uncontended acquire runs before the other
-- libraries are defined, so this stays small).
-- Keys: P.."pm:"..id hash permit id -> "granted_us tokens kind" (an instance's permits; the
-- kind is "provider" or "provider\tmodel"); P.."gate" hash: "l:"..group -> slot limit,
-- "u:"..group -> permits held in it, "reserving" -> instances with reserved capacity,
-- "waiting" -> the permit queue's length (exact whenever the queue grows; it may stay high
-- until the next queued acquire), "grace" -> the end of a restart's grace (restart.lua). The
-- gate's size is bounded by the slot groups, so reading a few of its fields stays cheap
-- (Redis keeps a small hash as a list).

local function kind_of(value)  -- the kind a permit value names
  local a = string.find(value, " ", 1, true)
  return string.sub(value, string.find(value, " ", a + 1, true) + 1)
end

-- The slot groups a permit of ``kind`` occupies; without a model it is in no model group (no
-- model limit can apply to it).
local function kind_groups(kind)
  local tab = string.find(kind, "\t", 1, true)
  if tab == nil then return {"*", "p:" .. kind} end
  local provider = string.sub(kind, 1, tab - 1)
  return {"*", "p:" .. provider, "m:" .. provider .. "/" .. string.sub(kind, tab + 1)}
end

local function count_kind(P, kind, by)
  for _, g in ipairs(kind_groups(kind)) do redis.call("HINCRBY", P .. "gate", "u:" .. g, by) end
end

-- ``record`` is the value after the grant time: " tokens kind"
local function add_permit(P, instance, permit_id, now, record, kind)
  redis.call("HSET", P .. "pm:" .. instance, permit_id, string.format("%d", now) .. record)
  count_kind(P, kind, 1)
end

local function drop_permit(P, instance, permit_id)  -- 1 if it was held, else 0
  local raw = redis.call("HGET", P .. "pm:" .. instance, permit_id)
  if not raw then return 0 end
  redis.call("HDEL", P .. "pm:" .. instance, permit_id)
  count_kind(P, kind_of(raw), -1)
  return 1
end

-- Free the permits ``list`` names (the caller's JSON, decoded: per kind, {kind, {id, ...}},
-- the kind "" if the caller does not know it, the ids as text). A permit already freed counts
-- nothing, so a resent call frees nothing twice. Slot counts of kind ``keep`` are left to the
-- caller. Returns how many were freed and how many of them of kind ``keep``.
local function free_permits(P, instance, list, keep)
  local pm = P .. "pm:" .. instance
  local only = list[1]
  if only ~= nil and list[2] == nil and only[1] ~= "" and #only[2] == 1 then  -- one permit of a
    local kind1 = only[1]  -- known kind: the last cycle's (nearly always)
    local gone = redis.call("HDEL", pm, only[2][1])
    if kind1 == keep then return gone, gone end
    if gone > 0 then count_kind(P, kind1, -gone) end
    return gone, 0
  end
  local freed, kept = 0, 0
  for _, group in ipairs(list) do
    local kind, ids = group[1], group[2]
    local n = #ids
    if n > 0 then
      local held = kind == "" and redis.call("HMGET", pm, unpack(ids))
      local gone = redis.call("HDEL", pm, unpack(ids))
      freed = freed + gone
      if held then
        for k = 1, n do
          if held[k] then
            local found = kind_of(held[k])
            if found == keep then kept = kept + 1 else count_kind(P, found, -1) end
          end
        end
      elseif kind == keep then
        kept = kept + gone
      elseif gone > 0 then
        count_kind(P, kind, -gone)
      end
    end
  end
  return freed, kept
end

-- Slots came free: while anybody waits (on any host), tell the processes that wait. Each
-- subscribes to P.."freed" while it has slot waiters (stores/redis/freed.py) and wakes its
-- earliest; the message is "n instance", so the releasing instance, which wakes its own
-- waiters itself, skips it. An account that may not publish costs the waiters their safety
-- poll, never the release (pcall). Returns the queue's length (the client sends its next
-- release at once while it is not 0).
local function announce(P, n, instance)
  local waiting = redis.call("ZCARD", P .. "waiters")
  if n > 0 and waiting > 0 then
    redis.pcall("PUBLISH", P .. "freed", n .. " " .. instance)
  end
  return waiting
end
