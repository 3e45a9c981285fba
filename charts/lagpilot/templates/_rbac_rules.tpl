{{/*
What the operator does in a namespace it watches, and nothing more. The same rules back the
ClusterRole (all namespaces) and each per-namespace Role (watchNamespaces).
Each rule names the code that needs it; docs/helm.md has the table.
*/}}
{{- define "lagpilot.namespacedRules" -}}
# ConsumerGroups: kopf watches them and patches finalizers/annotations; the operator writes status.
- apiGroups: [lagpilot.io]
  resources: [consumergroups]
  verbs: [get, list, watch, patch, update]
- apiGroups: [lagpilot.io]
  resources: [consumergroups/status]
  verbs: [get, patch, update]
- apiGroups: [lagpilot.io]
  resources: [consumergroups/scale]
  verbs: [get, patch, update]
# Objects owned by each ConsumerGroup: worker Deployments, their ServiceAccount, metrics Service,
# assignment ConfigMap.
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, update, patch, delete]
- apiGroups: [""]
  resources: [serviceaccounts, services, configmaps]
  verbs: [get, list, watch, create, update, patch, delete]
# The workers' Role/RoleBinding. RBAC lets the operator grant only what it holds itself: workers get
# configmaps get/list/watch and leases get/create/update/patch/list/watch, both held here.
- apiGroups: [rbac.authorization.k8s.io]
  resources: [roles, rolebindings]
  verbs: [get, list, watch, create, update, patch, delete]
# Worker Leases: the operator reads what each worker owns (hand-off protocol).
- apiGroups: [coordination.k8s.io]
  resources: [leases]
  verbs: [get, list, watch, create, update, patch]
# Worker pods: readiness, restarts (WorkersCrashLooping), pod IPs for metrics scraping.
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch]
# Events about ConsumerGroups (kopf uses core/v1; the operator may use events.k8s.io/v1).
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- if .peering }}
# kopf peering: two replicas never both act.
- apiGroups: [kopf.dev]
  resources: [{{ .peering }}]
  verbs: [get, list, watch, patch]
{{- end }}
{{- end }}
