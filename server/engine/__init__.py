"""The engine: one process per device holding the weights; level selection, queues,
deadlines, batching and forwards. Imports no web framework (docs/architecture.md)."""
