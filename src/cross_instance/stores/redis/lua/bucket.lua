-- A rate bucket's state (the SQLite store's buckets row): the field "s" of hash
-- P.."b:"..key, thirteen doubles packed with struct.pack in the order of BUCKET_FIELDS.
-- Every permit reads and writes it, and unpacking numbers costs a fraction of reading as many
-- text fields and converting each (about 4 µs less per permit, a few % of a permit cycle).
-- Doubles are exact for the integers kept here (µs times below 2^53, counts, limits) and are
-- the learned rate's own type. An absent learned rate or reported limit is NONE. Whoever
-- wants the state as text asks the store (snapshot, pi-xi status).

local BUCKET = "<ddddddddddddd"
local BUCKET_FIELDS = {"per_minute", "burst", "tat", "win", "cur", "prev", "lrate",
  "decreased_at", "last_429", "last_increase", "cooldown_until", "reported_limit", "probed"}
local NONE = -1

local function bucket_from(key, v)  -- v: the unpacked numbers, in BUCKET_FIELDS order
  local b = {key = key}
  for i, field in ipairs(BUCKET_FIELDS) do b[field] = v[i] end
  if b.lrate == NONE then b.lrate = nil end
  if b.reported_limit == NONE then b.reported_limit = nil end
  b.probed = b.probed == 1
  return b
end

local function load_bucket(P, key)  -- the bucket as a table, or nil if nobody published it
  local packed = redis.call("HGET", P .. "b:" .. key, "s")
  if not packed then return nil end
  return bucket_from(key, {struct.unpack(BUCKET, packed)})
end

local function bucket_numbers(b)  -- the inverse of bucket_from
  return {b.per_minute, b.burst, b.tat, b.win, b.cur, b.prev, b.lrate or NONE, b.decreased_at,
    b.last_429, b.last_increase, b.cooldown_until, b.reported_limit or NONE, b.probed and 1 or 0}
end

local function save_numbers(P, key, v)  -- v: the numbers, in BUCKET_FIELDS order
  redis.call("HSET", P .. "b:" .. key, "s", struct.pack(BUCKET, unpack(v)))
end

local function save_bucket(P, b) save_numbers(P, b.key, bucket_numbers(b)) end

-- A new bucket at ``per_minute``/``burst`` whose TAT starts at ``tat`` (restart.lua's
-- restart_tat); one written as text fields by an earlier version of this package keeps its
-- state (converted, its text fields removed).
local function create_bucket(P, key, per_minute, burst, tat)
  local old = redis.call("HMGET", P .. "b:" .. key, unpack(BUCKET_FIELDS))
  if old[1] then
    local v = {}
    for i, field in ipairs(BUCKET_FIELDS) do
      v[i] = tonumber(old[i]) or ((field == "lrate" or field == "reported_limit") and NONE or 0)
    end
    save_bucket(P, bucket_from(key, v))
    redis.call("HDEL", P .. "b:" .. key, unpack(BUCKET_FIELDS))
    return
  end
  save_bucket(P, {key = key, per_minute = per_minute, burst = burst, tat = tat, win = 0, cur = 0,
    prev = 0, decreased_at = 0, last_429 = 0, last_increase = 0, cooldown_until = 0,
    probed = false})
end

-- The bucket as text fields (numbers as the SQLite store keeps them), for snapshots.
local function bucket_text(b)
  local out = {}
  for _, field in ipairs(BUCKET_FIELDS) do
    local v = b[field]
    if field == "probed" then v = v and 1 or 0 end
    if v ~= nil then
      out[#out + 1] = field
      out[#out + 1] = field == "lrate" and string.format("%.17g", v) or string.format("%d", v)
    end
  end
  return out
end
