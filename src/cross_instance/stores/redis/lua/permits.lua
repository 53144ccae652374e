-- Limits, buckets and the queue on Redis (the SQLite store's permits.py and learning.py, with
-- the decisions of arbiter.lua and adaptive.lua; held permits and slot counts: slots.lua).
-- Keys: P.."lim:"..key hash instance -> "a b" (published limits), P.."limkeys:"..id,
-- P.."b:"..key bucket hash (bucket.lua), P.."bkeys" set, P.."waiters" zset of tickets,
-- P.."w:"..ticket hash, P.."ww:"..id, P.."wseq",
-- P.."u:"..key hash instance -> "win count" (usage from heartbeats), P.."ukeys:"..id.

local BIG = 1073741824  -- 1 << 30: "no global limit"

local function weighted_share(total, my_priority, priorities)
  local weight = 0
  for _, p in ipairs(priorities) do weight = weight + p end
  if weight == 0 then weight = 1 end
  return math.max(1, idiv(total * my_priority, weight))
end

local function starts_with(s, prefix) return string.sub(s, 1, #prefix) == prefix end

local function recompute_limit(P, key)  -- the strictest limit among those who published one
  local values = redis.call("HVALS", P .. "lim:" .. key)
  if #values == 0 then return end  -- nobody left: keep the last effective limit
  local a, b = nil, nil
  for _, v in ipairs(values) do
    local sep = string.find(v, " ")
    local va, vb = tonumber(string.sub(v, 1, sep - 1)), tonumber(string.sub(v, sep + 1))
    a = a and math.min(a, va) or va
    b = b and math.min(b, vb) or vb
  end
  if starts_with(key, "r:") or starts_with(key, "t:") then
    local bucket = load_bucket(P, key)
    if bucket ~= nil then
      bucket.per_minute, bucket.burst = a, b
      save_bucket(P, bucket)
    end
  else
    redis.call("HSET", P .. "gate", "l:" .. key, a)
  end
end

local function drop_waiter(P, ticket)
  local inst = redis.call("HGET", P .. "w:" .. ticket, "instance")
  redis.call("ZREM", P .. "waiters", ticket)
  redis.call("DEL", P .. "w:" .. ticket)
  if inst then redis.call("SREM", P .. "ww:" .. inst, ticket) end
end

-- What an instance held besides its record (called by remove_instance's caller).
local function drop_holdings(P, id)
  for _, pid in ipairs(redis.call("HKEYS", P .. "pm:" .. id)) do drop_permit(P, id, pid) end
  redis.call("DEL", P .. "pm:" .. id)
  for _, t in ipairs(redis.call("SMEMBERS", P .. "ww:" .. id)) do drop_waiter(P, t) end
  redis.call("DEL", P .. "ww:" .. id)
  for _, key in ipairs(redis.call("SMEMBERS", P .. "ukeys:" .. id)) do
    redis.call("HDEL", P .. "u:" .. key, id)
  end
  redis.call("DEL", P .. "ukeys:" .. id)
  local keys = redis.call("SMEMBERS", P .. "limkeys:" .. id)
  for _, key in ipairs(keys) do redis.call("HDEL", P .. "lim:" .. key, id) end
  redis.call("DEL", P .. "limkeys:" .. id)
  for _, key in ipairs(keys) do recompute_limit(P, key) end
end
