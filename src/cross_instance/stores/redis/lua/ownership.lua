-- Workflow ownership on Redis: core/ownership.decide as Lua, and the fenced state. Keys:
-- P.."wf:"..id hash (owner fields absent when released; epoch kept), P.."wfids" set,
-- P.."wfs:"..id hash of JSON values, P.."meta" hash with "floor" (see docs/redis-store.md).

local function floor_of(P, now)  -- epochs of this incarnation of the data start above it
  redis.call("HSETNX", P .. "meta", "floor", now)
  return tonumber(redis.call("HGET", P .. "meta", "floor"))
end

local function load_workflow(P, wid)
  local flat = redis.call("HGETALL", P .. "wf:" .. wid)
  if #flat == 0 then return nil end
  local w = {}
  for i = 1, #flat, 2 do w[flat[i]] = flat[i + 1] end
  w.epoch = tonumber(w.epoch)
  if w.owner ~= nil then w.pid, w.ticks = tonumber(w.pid), tonumber(w.ticks) end
  return w
end

local function same_process(w, rec)
  return rec ~= nil and w.owner == rec.id and w.pid == rec.pid and w.ticks == rec.ticks
    and w.host == rec.host and w.boot == rec.boot and w.pidns == rec.pidns
end

-- Returns action, epoch, reason (core/ownership.decide).
local function decide(w, caller, verdict, claim, auto_claim, force, floor)
  local epoch = w and w.epoch or floor
  if w == nil or w.owner == nil then
    if claim or force ~= "no" then return "claimed", epoch + 1, "it had no owner" end
    return "unowned", epoch, "it has no owner"
  end
  if same_process(w, caller) then return "owned", epoch, "the caller owns it" end
  if verdict == "dead" then
    if force ~= "no" then return "force_claimed", epoch + 1, "its owner is dead" end
    if claim and auto_claim then return "auto_claimed", epoch + 1, "its owner is dead" end
    return "refused", epoch, "its owner is dead; auto-claim is off, force-claim it to take over"
  end
  if force == "live" then return "force_claimed", epoch + 1, "taken from a live owner by force" end
  local state = verdict == "alive" and "alive" or "not known to be dead"
  return "refused", epoch, "its owner " .. w.owner .. " is " .. state
end

local function fence(P, wid, caller, epoch)  -- nil when the caller owns wid at epoch
  local w = load_workflow(P, wid)
  local cur_owner, cur_epoch = w and w.owner, w and w.epoch or 0
  if cur_owner ~= caller or cur_epoch ~= epoch then
    return {"stale", cur_epoch, cur_owner or ""}
  end
  return nil
end

local function workflow_reply(w)
  if w == nil then return {} end
  return {w.owner or "", w.pid or 0, w.host or "", w.boot or "", w.pidns or "", w.ticks or 0,
          w.epoch, w.claimed, w.updated}
end
