-- Argo CD action "pause": what `kubectl lvm pause` does (a command annotation and a fresh id).
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["lvm.rollout.io/command"] = "pause"
obj.metadata.annotations["lvm.rollout.io/command-id"] = "argocd-" .. os.time()
return obj
