"""The soak's short version: 30 s of HTTP/1 + Redis + DNS through a live worker and a hub
(tests/support/soak.py; the long one is tests/bench/bench_soak.py). Memory and disk must stay
under their bounds the whole time, sampled every second."""

from __future__ import annotations

from pathlib import Path

import pytest

from support.soak import soak

pytestmark = pytest.mark.root

# Bounds: the store is bounded by --storage-limit (segments, index, WAL and temp files, at
# every moment: docs/OPERATIONS.md, Storage); memory by what
# the worker (capture + dissection processes) and the hub need at this rate, with room for
# the interpreter's own variation but far below growth without bound.
WORKER_RSS_MB = 400
HUB_RSS_MB = 200


def test_thirty_seconds_of_mixed_traffic_stay_within_bounds(tmp_path: Path) -> None:
    result = soak(30, tmp_path, storage_limit="16MB")
    assert all(result.requests.get(p, 0) > 50 for p in ("http", "redis", "dns")), result.requests
    assert result.streamed > 0, "the hub's live client received nothing"
    assert result.final_status["index"]["entries"] > 0, result.final_status["dissection"]
    over = [s for s in result.samples if s.store_bytes > result.storage_limit]
    assert not over, f"the store went over {result.storage_limit:,} bytes: {over[:3]}"
    worst_worker, worst_hub = max(s.worker_rss_mb for s in result.samples), max(s.hub_rss_mb for s in result.samples)
    assert worst_worker < WORKER_RSS_MB, f"worker RSS reached {worst_worker:.0f} MB"
    assert worst_hub < HUB_RSS_MB, f"hub RSS reached {worst_hub:.0f} MB"
