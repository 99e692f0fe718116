"""The worker's store: capped PCAP segments (segments.py) and the entry index (index.py)."""

from __future__ import annotations

from worker.store.index import EntryIndex, IndexRow, open_index
from worker.store.segments import (
    MIN_SEGMENT_SIZE,
    MIN_STORAGE_LIMIT,
    SegmentEvicted,
    SegmentTail,
    SegmentWriter,
    StoreError,
    StoreStats,
    iter_segment,
    list_segments,
    read_range,
    segment_size_for,
)

__all__ = [
    "MIN_SEGMENT_SIZE", "MIN_STORAGE_LIMIT", "EntryIndex", "IndexRow", "SegmentEvicted",
    "SegmentTail", "SegmentWriter", "StoreError", "StoreStats", "iter_segment",
    "list_segments", "open_index", "read_range",
    "segment_size_for",
]
