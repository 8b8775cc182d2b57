-- Argo CD health check for orgpipeline.io/v1alpha1 OrgPipeline.
-- The same script is in argocd-cm.yaml (resource.customizations.health.orgpipeline.io_OrgPipeline);
-- tests/unit/argocd proves they agree and runs it with lua5.4 over sample statuses.
--
--   Progressing  the operator has not yet reconciled the current generation, or Ready is Unknown
--                or False with reason Reconciling
--   Degraded     Ready is False for any other reason (invalid spec, database or API error), or
--                the Healthy condition is False (active alerts: failed runs, quality breaches)
--   Suspended    spec.suspend is true and nothing above applies (every CronJob is suspended)
--   Healthy      Ready is True for the current generation and no alert is active
local hs = {}

local function condition(conditions, type_)
  if conditions == nil then
    return nil
  end
  for _, c in ipairs(conditions) do
    if c.type == type_ then
      return c
    end
  end
  return nil
end

local function text(c)
  if c == nil then
    return ""
  end
  local msg = c.reason or ""
  if c.message ~= nil and c.message ~= "" then
    msg = msg .. ": " .. c.message
  end
  return msg
end

local generation = 0
if obj.metadata ~= nil and obj.metadata.generation ~= nil then
  generation = obj.metadata.generation
end

if obj.status == nil or obj.status.observedGeneration == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to reconcile the OrgPipeline"
  return hs
end

if obj.status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to reconcile generation " .. tostring(generation) ..
    " (observed " .. tostring(obj.status.observedGeneration) .. ")"
  return hs
end

local conditions = obj.status.conditions
local ready = condition(conditions, "Ready")
if ready == nil or ready.status == "Unknown" then
  hs.status = "Progressing"
  hs.message = "Waiting for the Ready condition"
  if ready ~= nil then
    hs.message = hs.message .. " (" .. text(ready) .. ")"
  end
  return hs
end

if ready.observedGeneration ~= nil and ready.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Ready was set for an older generation " .. tostring(ready.observedGeneration)
  return hs
end

if ready.status == "False" then
  if ready.reason == "Reconciling" then
    hs.status = "Progressing"
  else
    hs.status = "Degraded"
  end
  hs.message = text(ready)
  return hs
end

local healthy = condition(conditions, "Healthy")
if healthy ~= nil and healthy.status == "False" then
  hs.status = "Degraded"
  local alerts = obj.status.activeAlerts
  if alerts ~= nil then
    hs.message = tostring(alerts) .. " active alert(s): " .. (healthy.message or "")
  else
    hs.message = text(healthy)
  end
  return hs
end

local suspended = condition(conditions, "Suspended")
if (obj.spec ~= nil and obj.spec.suspend == true) or (suspended ~= nil and suspended.status == "True") then
  hs.status = "Suspended"
  hs.message = "Suspended: every CronJob of the org is suspended"
  return hs
end

hs.status = "Healthy"
hs.message = text(ready)
return hs
