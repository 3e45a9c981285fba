{{/*
What the operator does in a namespace it watches, and nothing more. No Secret is readable unless named
in rbac.secretNames or granted (`lagpilot grant-secret`); workers get theirs mounted by the kubelet. The same rules back the
ClusterRole (all namespaces) and each per-namespace Role (watchNamespaces). Each rule names the code
that needs it (operator/kube.py, reconcile.py, handlers.py; kopf); docs/helm.md has the table.
Objects are written by server-side apply (PATCH; create when absent) and kopf patches; the one PUT is the
assignment ConfigMap, replaced over the resourceVersion read (optimistic concurrency).
*/}}
{{- define "lagpilot.namespacedRules" -}}
# ConsumerGroups: kopf lists/watches them and patches finalizers and annotations; handlers re-read them.
- apiGroups: [lagpilot.io]
  resources: [consumergroups]
  verbs: [get, list, watch, patch]
- apiGroups: [lagpilot.io]
  resources: [consumergroups/status]
  verbs: [patch]
# Worker Deployments: applied per revision, old revisions deleted; kopf watches them to repair drift.
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, patch, delete]
# Per-group objects, applied (owned by the ConsumerGroup, so garbage collection deletes them); watched
# (labelled ones) so that a deleted one is put back at once rather than at the next full resync.
- apiGroups: [""]
  resources: [serviceaccounts, services]
  verbs: [get, list, watch, create, patch]
- apiGroups: [rbac.authorization.k8s.io]
  resources: [roles, rolebindings]
  verbs: [get, list, watch, create, patch]
# The assignment ConfigMap (created, then written by the hand-off). Workers get
# get/list/watch on it; RBAC lets the operator grant only what it holds, hence list/watch here.
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, list, watch, create, patch, update]
# Worker Leases: the operator reads what each worker owns (and reconciles on their changes), deletes
# expired Leases of gone pods; workers get get/create/update/patch on them, which the operator must hold
# to grant.
- apiGroups: [coordination.k8s.io]
  resources: [leases]
  verbs: [get, list, watch, create, update, patch, delete]
# Worker pods: readiness and restarts (WorkersCrashLooping) for status; the hand-off patches
# controller.kubernetes.io/pod-deletion-cost on emptied pods so a scale-down removes them first.
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch, patch]
{{- if .allSecrets }}
# rbac.readAllSecrets: any Secret a ConsumerGroup names (its Kafka credentials, for the operator's own
# metadata and lag reads; the others only for an existence check). Read by name only.
- apiGroups: [""]
  resources: [secrets]
  verbs: [get]
{{- else if .secretNames }}
# rbac.secretNames: only these Secrets (the Kafka credentials ConsumerGroups name, for the operator's own
# metadata and lag reads). More are granted per namespace by whoever may read them: `lagpilot grant-secret`.
- apiGroups: [""]
  resources: [secrets]
  resourceNames: {{ toJson .secretNames }}
  verbs: [get]
{{- end }}
# Events on ConsumerGroups (kopf.event posts core/v1 Events).
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- if .peering }}
# kopf peering: replicas announce themselves on the peering object; only the highest priority acts.
- apiGroups: [kopf.dev]
  resources: [{{ .peering }}]
  verbs: [list, watch, patch]
{{- end }}
{{- end }}
