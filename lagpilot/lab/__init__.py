"""The embedded local lab: a real Kafka broker, a real Kubernetes control plane and a runner that plays
kubelet and scheduler by running pod commands as local processes. For development and tests only."""
