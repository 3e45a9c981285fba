"""lagpilot: Kafka -> HTTP consumer groups on Kubernetes."""
__version__ = "0.1.0"
