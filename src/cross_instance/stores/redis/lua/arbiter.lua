-- Who may take capacity now, first come first served: the twin of core/arbiter.py (read its
-- docstring for the rules), pinned to it by a differential property test. Needs limiter.lua.
--
-- cap = {tats = {key = tat}, specs = {key = {burst = b, t = interval}}, group_used = {g = n},
--        group_limit = {g = n}, holders = {id = {used = u, reserved = r, share = s}}}
-- need = {instance_id = id, rates = {{key, cost}, ...}, slots = {g, ...}, ticket = n or nil}

local GLOBAL_GROUP = "*"
local NEW_TICKET = 4611686018427387904  -- 1 << 62: after every real ticket

local function ledger_new(cap, now)
  local l = {cap = cap, now = now, tats = {}, used = {}, held = {}, blocked_rates = {},
             blocked_slots = {}}
  for k, v in pairs(cap.tats) do l.tats[k] = v end
  for k, v in pairs(cap.group_used) do l.used[k] = v end
  local listed, excess = 0, 0
  for id, h in pairs(cap.holders) do
    l.held[id] = h.used
    listed = listed + h.used
    excess = excess + math.max(h.used, h.reserved)
  end
  l.reserved_excess = excess + math.max(0, (cap.group_used[GLOBAL_GROUP] or 0) - listed)
  return l
end

local function rate_ok(l, key, cost)
  local spec = l.cap.specs[key]
  if spec == nil then return true end
  return not l.blocked_rates[key] and admits(l.tats[key] or 0, l.now, spec.burst, spec.t, cost)
end

local function slot_ok(l, group, instance_id)
  local limit = l.cap.group_limit[group]
  if limit == nil then return not l.blocked_slots[group] end
  if (l.used[group] or 0) + 1 > limit then return false end
  if group ~= GLOBAL_GROUP then return not l.blocked_slots[group] end
  local holder = l.cap.holders[instance_id]
  local reserved = holder and holder.reserved or 0
  -- its reserved slot: no waiter ahead could have taken it
  if (l.held[instance_id] or 0) < reserved then return true end
  return (not l.blocked_slots[group]) and l.reserved_excess + 1 <= limit
end

local function take_rates(l, need)
  for _, rc in ipairs(need.rates) do
    local spec = l.cap.specs[rc[1]]
    if spec ~= nil then l.tats[rc[1]] = consume(l.tats[rc[1]] or 0, l.now, spec.t, rc[2]) end
  end
end

local function take_slots(l, need)
  for _, g in ipairs(need.slots) do
    l.used[g] = (l.used[g] or 0) + 1
    if g == GLOBAL_GROUP then
      local holder = l.cap.holders[need.instance_id]
      local before = l.held[need.instance_id] or 0
      if before >= (holder and holder.reserved or 0) then
        l.reserved_excess = l.reserved_excess + 1
      end
      l.held[need.instance_id] = before + 1
    end
  end
end

local function ledger_ready_at(l, need)
  local at = l.now
  for _, rc in ipairs(need.rates) do
    local spec = l.cap.specs[rc[1]]
    if spec ~= nil then
      at = math.max(at, ready_at(l.tats[rc[1]] or 0, l.now, spec.burst, spec.t, rc[2]))
    end
  end
  return at
end

local function visit(l, need)
  local rates_ok = true
  for _, rc in ipairs(need.rates) do
    if not rate_ok(l, rc[1], rc[2]) then rates_ok = false end
  end
  local slots_ok = true
  for _, g in ipairs(need.slots) do
    if not slot_ok(l, g, need.instance_id) then slots_ok = false end
  end
  local at = rates_ok and l.now or ledger_ready_at(l, need)
  if rates_ok and slots_ok then
    take_rates(l, need)
    take_slots(l, need)
  elseif rates_ok then
    take_rates(l, need)
    local short = {}
    for _, g in ipairs(need.slots) do
      if not slot_ok(l, g, need.instance_id) then short[#short + 1] = g end
    end
    for _, g in ipairs(short) do l.blocked_slots[g] = true end
  else
    local short = {}
    for _, rc in ipairs(need.rates) do
      if not rate_ok(l, rc[1], rc[2]) then short[#short + 1] = rc[1] end
    end
    take_rates(l, need)
    for _, k in ipairs(short) do l.blocked_rates[k] = true end
  end
  return rates_ok, slots_ok, at
end

local function queue_key(need, holders)
  local holder = holders[need.instance_id]
  local over = (holder == nil or holder.used >= holder.share) and 1 or 0
  return over, need.ticket or NEW_TICKET
end

local function before(a_over, a_ticket, b_over, b_ticket)
  return a_over < b_over or (a_over == b_over and a_ticket < b_ticket)
end

-- Returns grant (bool), ready_at, slot_blocked (bool), ahead, reason.
local function arbitrate(me, waiters, cap, now)
  local l = ledger_new(cap, now)
  local ahead = 0
  if #waiters > 0 then
    local m_over, m_ticket = queue_key(me, cap.holders)
    -- each waiter's key once; waiters given in ticket order (as permit_acquire reads the queue)
    -- are put in order by moving those over their share behind, keeping the rest as they
    -- are (the same order a stable sort gives, in one pass: a sort with the key computed in
    -- each comparison cost most of a decision over a long queue)
    local keyed, in_order = {}, true
    for i, w in ipairs(waiters) do
      local o, t = queue_key(w, cap.holders)
      keyed[i] = {w, o, t}
      if i > 1 and keyed[i - 1][3] > t then in_order = false end
    end
    local order = keyed
    if in_order then
      order = {}
      for _, k in ipairs(keyed) do if k[2] == 0 then order[#order + 1] = k end end
      for _, k in ipairs(keyed) do if k[2] ~= 0 then order[#order + 1] = k end end
    else
      table.sort(order, function(a, b) return before(a[2], a[3], b[2], b[3]) end)
    end
    for _, k in ipairs(order) do
      local w = k[1]
      if not (me.ticket ~= nil and w.ticket == me.ticket) then
        if not before(k[2], k[3], m_over, m_ticket) then break end
        visit(l, w)
        ahead = ahead + 1
      end
    end
  end
  local rates_ok, slots_ok, at = visit(l, me)
  if rates_ok and slots_ok then return true, now, false, ahead, "" end
  local reason = rates_ok and "waiting for a concurrency slot" or "waiting for rate tokens"
  return false, at, rates_ok and not slots_ok, ahead, reason
end
