-- The uncontended acquire (nobody queued, nothing reserved, no restart's grace, the request
-- fits now), decided from a few reads: most permits are this, so it allocates little and
-- makes as few calls as it can. permit_acquire.lua decides it before its other libraries are
-- defined (see scripts.py); needs clock, limiter, slots and bucket.
--
-- The request arrives as permit_acquire.lua reads its ARGV: the client builds what it can
-- once per plan (names, the gate fields, the permit's record, the rates as JSON) so the
-- server, which every instance shares, does less.

-- A plan's rates and gate fields arrive as the same JSON texts in each of its calls, so each
-- text is decoded once where the code stays loaded between calls (the function library: a
-- decode costs more than the lookup, about 0.35 µs each) and the value is shared: its readers
-- never change it. Forgotten whole once it holds PLAN_TEXTS_KEPT texts.
local PLAN_TEXTS_KEPT = 1024
local plan_values, plan_texts = {}, 0
local function plan_value(text)
  local v = plan_values[text]
  if v == nil then
    if plan_texts >= PLAN_TEXTS_KEPT then plan_values, plan_texts = {}, 0 end
    v = cjson.decode(text)
    plan_values[text], plan_texts = v, plan_texts + 1
  end
  return v
end

-- A grant's reply: one string of five little-endian 64-bit integers (the grant time, then the
-- first bucket's minute counts win, cur, prev and its limit per minute). Every other reply of
-- an acquire is an array. Redis turns a table into a reply element by element, which costs
-- more than packing five numbers once (about 0.4 µs of the server's time per permit).
local GRANTED = "<i8i8i8i8i8"
local function granted_reply(now, win, cur, prev, limit)
  return struct.pack(GRANTED, now, win, cur, prev, limit)
end

-- Take ``cost`` from a bucket's numbers ``v`` (as unpacked, see bucket.lua; updated here) with
-- interval ``t`` and effective TAT ``tat``: its new TAT and minute counts, as the SQLite store's
-- grant (permits._TAKE). Returns the new minute counts (the client turns them into its count
-- over the last minute).
local function take(now, cost, t, tat, v)
  local this = idiv(now, US_PER_MINUTE)
  local win, cur, prev = v[4], v[5], v[6]
  if win == this then cur = cur + cost  -- the same minute (nearly always)
  elseif win == this - 1 then prev, cur = cur, cost
  else prev, cur = 0, cost end
  v[3], v[4], v[5], v[6] = consume(tat, now, t, cost), this, cur, prev
  return this, cur, prev
end

-- Spend ``cost`` from bucket ``key`` (see take) and save it.
local function spend(P, now, key, cost, t, tat, v)
  local this, cur, prev = take(now, cost, t, tat, v)
  save_numbers(P, key, v)
  return this, cur, prev
end

-- One bucket's part of the uncontended decision (``v`` its numbers): the interval and
-- effective TAT (core/adaptive.effective) if it admits ``cost`` now, else nil.
local function bucket_admits(v, key, cost, reports, now)
  local slow = reports and v[13] ~= 1 and string.sub(key, 1, 2) == "r:"
  local _, burst, t, tat = effective(v[1], v[2], v[3], v[7] ~= NONE and v[7] or nil, v[11],
    slow)
  if cost > burst or not admits(tat, now, burst, t, cost) then return nil end
  return t, tat
end

-- ``gate`` as read (HMGET "waiting", "reserving", "grace", then (limit, count) per slot
-- group; absent fields false): whether somebody is queued, capacity is reserved or a
-- restart's grace runs, so that the uncontended path does not apply.
local function contended(gate)
  local waiting, reserving = gate[1], gate[2]  -- nearly always "0" or absent
  return (waiting and waiting ~= "0" and tonumber(waiting) > 0)
    or (reserving and reserving ~= "0" and tonumber(reserving) > 0) or gate[3]
end

-- Whether each slot group of ``gate`` has a free slot once ``same`` permits of the request's
-- kind, counted in ``gate`` (read before they were freed), are gone: all are the kind's
-- groups, so each counts ``same`` less now.
local function slots_free(gate, same)
  for k = 4, #gate, 2 do
    local lim = gate[k]
    if lim and (tonumber(gate[k + 1]) or 0) - same + 1 > tonumber(lim) then return false end
  end
  return true
end

-- The uncontended case, as arbiter.fits_now: a grant, or nil to let the full path decide
-- (which also gives every refusal, error and resent call its answer). Most permits take this
-- path, so it allocates little (its arguments are passed one by one, not as a table) and
-- freeing and granting permits of one kind (the steady state) leaves the slot counts
-- unwritten. The request: ``permit_id`` for ``instance``, of ``kind`` with ``record`` (its
-- value after the grant time), ``reports`` (boolean), ``rates`` ({{bucket, cost}, ...}),
-- ``gate_fields`` (the gate fields of its slot groups: "l:" and "u:" of each) and ``free`` (the
-- permits to free, see free_permits).
local function acquire_at_once(P, now, permit_id, instance, kind, record, reports, rates,
                               gate_fields, free)
  local found = {}  -- per bucket: {its numbers, interval, effective TAT, cost}
  for k = 1, #rates do
    local key, cost = rates[k][1], rates[k][2]
    local packed = redis.call("HGET", P .. "b:" .. key, "s")
    if not packed then return nil end
    local v = {struct.unpack(BUCKET, packed)}  -- in BUCKET_FIELDS order
    local t, tat = bucket_admits(v, key, cost, reports, now)
    if t == nil then return nil end
    found[k] = {v, t, tat, cost}
  end
  local gate = redis.call("HMGET", P .. "gate", "waiting", "reserving", "grace",
    unpack(gate_fields))
  if contended(gate) then
    return nil  -- somebody queued, capacity reserved, or a restart's grace: the full path
  end
  local freed, same = free_permits(P, instance, free, kind)  -- same: of this kind
  -- Only a registered instance holds permits (removing one drops its permits in the same
  -- step), so a freed permit shows this one is registered; otherwise look. Not registered:
  -- nothing was changed, and the full path refuses.
  if freed == 0 and redis.call("EXISTS", P .. "i:" .. instance) == 0 then return nil end
  local fits = slots_free(gate, same)
  if fits then  -- recorded only if this id is new: a resent call is answered by the full path
    fits = redis.call("HSETNX", P .. "pm:" .. instance, permit_id,
      string.format("%d", now) .. record) == 1
  end
  local net = (fits and 1 or 0) - same
  if net ~= 0 then count_kind(P, kind, net) end
  if not fits then return nil end
  local reply
  for k = 1, #rates do
    local f = found[k]
    local win, cur, prev = spend(P, now, rates[k][1], f[4], f[2], f[3], f[1])
    if k == 1 then reply = granted_reply(now, win, cur, prev, f[1][1]) end
  end
  return reply
end
