-- Argo CD action "resume": what `kubectl lvm resume` does (a command annotation and a fresh id).
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["lvm.rollout.io/command"] = "resume"
obj.metadata.annotations["lvm.rollout.io/command-id"] = "argocd-" .. os.time()
return obj
