"""Test helpers shared by the consumer's, the operator's and the end-to-end tests (and the demo)."""
