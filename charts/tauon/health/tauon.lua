-- Argo CD health check for Tauon's kinds (group tauon.dev): Dataset, TrainingJob and
-- ModelDeployment. One script serves all three; configure it per kind or with the key
-- `resource.customizations.health.tauon.dev_*` (see docs/gitops.md).
--
-- Our status follows kstatus: observedGeneration, conditions Ready / Reconciling / Stalled on
-- every kind, Succeeded / Failed on the job-like ones, and a phase string for humans.
local hs = {status = "Progressing", message = "Waiting for the operator to report status"}
if obj.status == nil then
  return hs
end

local generation = obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local conditions = {}
if obj.status.conditions ~= nil then
  for _, c in ipairs(obj.status.conditions) do
    conditions[c.type] = c
  end
end

local function holds(kind)
  return conditions[kind] ~= nil and conditions[kind].status == "True"
end

local function say(kind, fallback)
  local c = conditions[kind]
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  if c ~= nil and c.reason ~= nil and c.reason ~= "" then
    return c.reason
  end
  return fallback
end

local phase = obj.status.phase

if phase == "Suspended" then
  hs.status = "Suspended"
  hs.message = say("Ready", "Suspended")
elseif holds("Failed") then
  hs.status = "Degraded"
  hs.message = say("Failed", "Failed")
elseif holds("Stalled") then
  hs.status = "Degraded"
  hs.message = say("Stalled", "Stalled")
elseif phase == "Failed" or phase == "Degraded" then
  hs.status = "Degraded"
  hs.message = say("Ready", phase)
elseif holds("Succeeded") then
  hs.status = "Healthy"
  hs.message = say("Succeeded", "Succeeded")
elseif holds("Ready") then
  hs.status = "Healthy"
  hs.message = say("Ready", "Ready")
elseif holds("Reconciling") then
  hs.status = "Progressing"
  hs.message = say("Reconciling", "Reconciling")
else
  hs.status = "Progressing"
  hs.message = say("Ready", phase or "Progressing")
end
return hs
