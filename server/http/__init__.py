"""The HTTP front ends: v1 and the Open Inference Protocol over one request path, talking
to the engine through an engine client (docs/architecture.md)."""
