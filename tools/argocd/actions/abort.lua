-- Argo CD action "abort": what `kubectl lvm abort` does (a command annotation and a fresh id).
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["lvm.rollout.io/command"] = "abort"
obj.metadata.annotations["lvm.rollout.io/command-id"] = "argocd-" .. os.time()
return obj
