"""GET /healthz: the worker's data-free health for probes (readiness and liveness), outside
/api/v1 and without the token (shark/auth.py lets it through). 200 while capture runs; 503 with
one line once the capture process has been dead for more than CAPTURE_DEAD_GRACE_S, so the
kubelet restarts a worker that would otherwise serve on while capturing nothing."""

from __future__ import annotations

import time

from shark.auth import HEALTH_PATH
from worker.api.asgi import Request, Response, Route
from worker.capture import CaptureProcess

# A moment for a stop in progress: only a capture dead for longer fails the probe.
CAPTURE_DEAD_GRACE_S = 3.0
TEXT = "text/plain; charset=utf-8"


def health_route(capture: CaptureProcess) -> dict[str, dict[str, Route]]:
    async def healthz(request: Request) -> Response:
        dead = capture.dead_for(time.monotonic())
        if dead is not None and dead > CAPTURE_DEAD_GRACE_S:
            return Response(f"capture process exited {dead:.0f}s ago (exit code "
                            f"{capture.exitcode}) and was not restarted: nothing is captured\n".encode(),
                            503, TEXT)
        return Response(b"ok\n", content_type=TEXT)
    return {HEALTH_PATH: {"GET": healthz}}
