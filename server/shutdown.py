"""How long each process of ``dvn serve`` gets to stop after its drain timeout
(``Settings.drain_timeout_s``): the engine, the front ends that wait on its answers, and
the supervisor that waits on both (docs/architecture.md, shutdown). Torch-free: the
supervisor and the front ends import it."""

from __future__ import annotations

# After a drain timeout: how long the refused requests' answers and the running batch get.
FINAL_GRACE_S = 2.0
# A front end waits this much longer than the engine for the engine's last answers.
FRONTEND_EXTRA_S = 1.0
# Longest a child may take to exit after its SIGTERM beyond the drain timeout.
EXIT_GRACE_S = FINAL_GRACE_S + 5.0
