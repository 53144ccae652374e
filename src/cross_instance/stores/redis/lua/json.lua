-- JSON out of Lua without losing integers: Redis's cjson writes at most 14 significant digits,
-- and the store's times (µs) and fencing tokens have 16. Flat objects only (what events and
-- permit records are); keys sorted, as the SQLite store writes them.

local MAX_EXACT = 9007199254740992  -- 2^53

local function json_value(v)
  if v == nil or v == cjson.null then return "null" end
  local t = type(v)
  if t == "boolean" then return v and "true" or "false" end
  if t == "number" then
    if v == math.floor(v) and math.abs(v) < MAX_EXACT then return string.format("%d", v) end
    return string.format("%.17g", v)
  end
  return cjson.encode(v)  -- strings (escaped) and nested tables
end

local function encode_flat(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys)
  local parts = {}
  for i, k in ipairs(keys) do parts[i] = cjson.encode(k) .. ":" .. json_value(t[k]) end
  return "{" .. table.concat(parts, ",") .. "}"
end
