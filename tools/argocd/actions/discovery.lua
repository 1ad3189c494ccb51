-- Argo CD resource actions for lvm.rollout.io/LVMRollout (resource.customizations.actions):
-- each sets the operator's command annotations, exactly as `kubectl lvm <verb>` does.
local actions = {}
local phase = (obj.status or {}).phase or "Pending"
local paused = ((obj.status or {}).serving or {}).manualPause == true or obj.spec.paused == true
local running = phase == "Pending" or phase == "Progressing" or phase == "Paused"
actions["promote"] = {["disabled"] = not running}
actions["abort"] = {["disabled"] = not running}
actions["retry"] = {["disabled"] = phase ~= "RolledBack"}
actions["pause"] = {["disabled"] = not running or paused}
actions["resume"] = {["disabled"] = not paused}
return actions
