-- Argo CD action "retry": what `kubectl lvm retry` does (a command annotation and a fresh id).
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["lvm.rollout.io/command"] = "retry"
obj.metadata.annotations["lvm.rollout.io/command-id"] = "argocd-" .. os.time()
return obj
