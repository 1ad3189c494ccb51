-- Argo CD action "{verb}": what `kubectl lvm {verb}` does (a command annotation and a fresh id).
-- (One script for every verb: render_cm.py puts in the verb for each action it lists.)
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["lvm.rollout.io/command"] = "{verb}"
obj.metadata.annotations["lvm.rollout.io/command-id"] = "argocd-" .. os.time()
return obj
