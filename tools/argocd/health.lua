-- Argo CD health check for lvm.rollout.io/LVMRollout (resource.customizations.health).
-- Reads what the operator writes: status.observedGeneration, status.phase and the kstatus
-- conditions (Ready, Reconciling, Stalled). Written for Argo CD's Lua (5.1-compatible).
local hs = {}

local function condition(status, kind)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local status = obj.status
if status == nil or status.observedGeneration == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the lvm-rollout operator to report"
  return hs
end
if obj.metadata.generation ~= nil and status.observedGeneration < obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. obj.metadata.generation
  return hs
end

local message = status.message or ""
if status.phase == "Paused" then
  hs.status = "Suspended"  -- kubectl lvm resume (or the Argo CD "resume" action) continues
  local progressing = condition(status, "Progressing")
  if progressing ~= nil and progressing.reason == "InconclusiveTimeout" then
    message = progressing.message or message
  else
    message = "paused (the resume action or kubectl lvm resume continues): " .. message
  end
  hs.message = message
  return hs
end
local stalled = condition(status, "Stalled")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"  -- rolled back, failed, refused or blocked: a person decides
  hs.message = (stalled.reason or "Stalled") .. ": " .. (stalled.message or message)
  return hs
end
local ready = condition(status, "Ready")
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = message
  return hs
end
hs.status = "Progressing"
hs.message = message
return hs
