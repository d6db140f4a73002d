-- Argo CD health check for weir.dev kinds (TracingPolicy, AggregationRule).
-- Progressing while the operator has not observed the current generation or nodes are
-- still reconciling; Degraded when the spec is invalid (Stalled) or some nodes failed;
-- Healthy when every targeted node runs the current generation (Ready).
local hs = {}
if obj.status == nil or obj.status.observedGeneration == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the weir operator to report status"
  return hs
end
if obj.metadata.generation ~= nil and obj.status.observedGeneration < obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. obj.metadata.generation
  return hs
end
local conditions = {}
if obj.status.conditions ~= nil then
  for _, condition in ipairs(obj.status.conditions) do
    conditions[condition.type] = condition
  end
end
local function is_true(name)
  return conditions[name] ~= nil and conditions[name].status == "True"
end
local function message(name)
  return (conditions[name] and conditions[name].message) or ""
end
if is_true("Stalled") then
  hs.status = "Degraded"
  hs.message = "Invalid spec: " .. message("Stalled")
elseif is_true("Degraded") then
  hs.status = "Degraded"
  hs.message = message("Degraded")
elseif is_true("Ready") then
  hs.status = "Healthy"
  hs.message = message("Ready")
else
  hs.status = "Progressing"
  hs.message = message("Reconciling") ~= "" and message("Reconciling") or message("Ready")
end
return hs
