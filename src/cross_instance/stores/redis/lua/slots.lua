-- Held permits and the slot counts kept with them, on every path that grants or frees one
-- (the uncontended acquire runs before the other libraries are defined, so this stays small).
-- Keys: P.."pm:"..id hash permit id -> "granted_us tokens provider[\tmodel]" (an instance's
-- permits); P.."slots" hash: "l:"..group -> slot limit, "u:"..group -> permits held in it,
-- "reserving" -> instances with reserved capacity.

-- The slot groups a permit occupies; a permit without a model is in no model group (no
-- model limit can apply to it).
local function permit_groups(provider, model)
  if model == nil then return {"*", "p:" .. provider} end
  return {"*", "p:" .. provider, "m:" .. provider .. "/" .. model}
end

local function parse_permit(value)  -- -> granted, tokens, provider, model or nil
  local a = string.find(value, " ", 1, true)
  local b = string.find(value, " ", a + 1, true)
  local what = string.sub(value, b + 1)
  local tab = string.find(what, "\t", 1, true)
  local provider, model = what, nil
  if tab then provider, model = string.sub(what, 1, tab - 1), string.sub(what, tab + 1) end
  return tonumber(string.sub(value, 1, a - 1)), tonumber(string.sub(value, a + 1, b - 1)),
    provider, model
end

local function permit_value(now, tokens, provider, model)
  local what = model == nil and provider or provider .. "\t" .. model
  return string.format("%d %d %s", now, tokens, what)
end

local function add_permit(P, instance, permit_id, now, tokens, provider, model)
  redis.call("HSET", P .. "pm:" .. instance, permit_id,
    permit_value(now, tokens, provider, model))
  for _, g in ipairs(permit_groups(provider, model)) do
    redis.call("HINCRBY", P .. "slots", "u:" .. g, 1)
  end
end

local function drop_permit(P, instance, permit_id)  -- 1 if it was held, else 0
  local raw = redis.call("HGET", P .. "pm:" .. instance, permit_id)
  if not raw then return 0 end
  local _, _, provider, model = parse_permit(raw)
  redis.call("HDEL", P .. "pm:" .. instance, permit_id)
  for _, g in ipairs(permit_groups(provider, model)) do
    redis.call("HINCRBY", P .. "slots", "u:" .. g, -1)
  end
  return 1
end
