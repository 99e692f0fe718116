"""Choosing a flow's dissector by content, with rewind.

Until a dissector claims the flow, the selector records every call (data, with offsets, ts and
refs, and gaps) and asks the candidate dissectors about the first bytes of each direction.
Candidates are tried in a fixed order: those whose port hint matches either port first, then
the rest, each group in registry order. The first candidate that does not say NO decides: MATCH
claims the flow, MORE waits for more bytes. So the choice does not depend on how the bytes
were split into chunks, and a port hint wins over an equally plausible later candidate.

The claiming dissector's session gets the recorded calls replayed in their original order,
then the live calls directly (the selector rebinds its methods to the session's).

Gaps: detection looks at the bytes after the last gap of each direction, so a flow whose
capture started mid-connection is detected on the first message start after the gap; a gap
also lets every candidate answer again. A flow no candidate claims (all NO, or detect_limit
bytes without a MATCH) is handed to `fallback` when one is given (a generic tcp/udp entry),
else ignored: buffered bytes are dropped, later ones only counted.
"""

from __future__ import annotations

from typing import Sequence

from worker.dissectors.base import Detect, Direction, Dissector, Emit, FlowInfo, Session
from worker.packet import PacketRef

DETECT_LIMIT = 16384

_DATA, _GAP = 0, 1


class SelectingSession:
    """A Session that becomes its claiming dissector's session (see the module doc)."""

    def __init__(self, flow: FlowInfo, emit: Emit, candidates: Sequence[Dissector],
                 body_limit: int, detect_limit: int, fallback: Dissector | None) -> None:
        self.flow = flow
        self._emit = emit
        self._candidates = list(candidates)
        self._body_limit = body_limit
        self._detect_limit = detect_limit
        self._fallback = fallback
        self._calls: list[tuple] = []
        self._windows = [bytearray(), bytearray()]   # per direction, bytes since its last gap
        self._refused: set[int] = set()              # said NO to the current windows
        self._buffered = 0
        self.dissector: Dissector | None = None      # the one that claimed the flow
        self.session: Session | None = None
        self.ignored = False
        self.ignored_bytes = 0

    def on_data(self, direction: Direction, data: bytes, offset: int, ts_ns: int,
                ref: PacketRef) -> None:
        if not data:
            return
        self._calls.append((_DATA, direction, data, offset, ts_ns, ref))
        self._windows[direction].extend(data)
        self._buffered += len(data)
        self._decide()

    def on_gap(self, direction: Direction, offset: int, length: int, ts_ns: int) -> None:
        self._calls.append((_GAP, direction, offset, length, ts_ns))
        self._windows[direction].clear()
        self._refused.clear()

    def on_close(self, ts_ns: int) -> None:
        # Nothing claimed the flow before it ended.
        if self._fallback is not None:
            self._claim(self._fallback)
            self.on_close(ts_ns)   # now the fallback session's on_close
        else:
            self._ignore()

    def _decide(self) -> None:
        client, server = bytes(self._windows[0]), bytes(self._windows[1])
        if client or server:
            for i, dissector in enumerate(self._candidates):
                if i in self._refused:
                    continue
                answer = dissector.detect(client, server)
                if answer is Detect.MATCH:
                    self._claim(dissector)
                    return
                if answer is Detect.MORE:
                    break
                self._refused.add(i)
            else:
                self._give_up()
                return
        if self._buffered >= self._detect_limit:
            self._give_up()

    def _give_up(self) -> None:
        if self._fallback is not None:
            self._claim(self._fallback)
        else:
            self._ignore()

    def _claim(self, dissector: Dissector) -> None:
        session = dissector.session(self.flow, self._emit, self._body_limit)
        self.dissector, self.session = dissector, session
        calls, self._calls = self._calls, []
        self._windows = [bytearray(), bytearray()]
        # From now on calls go straight to the session.
        self.on_data = session.on_data          # type: ignore[method-assign]
        self.on_gap = session.on_gap            # type: ignore[method-assign]
        self.on_close = session.on_close        # type: ignore[method-assign]
        for call in calls:
            if call[0] == _DATA:
                session.on_data(*call[1:])
            else:
                session.on_gap(*call[1:])

    def _ignore(self) -> None:
        self.ignored = True
        self.ignored_bytes += self._buffered
        self._calls = []
        self._windows = [bytearray(), bytearray()]
        self.on_data = self._count              # type: ignore[method-assign]
        self.on_gap = self._nothing             # type: ignore[method-assign]
        self.on_close = self._nothing           # type: ignore[method-assign]

    def _count(self, direction: Direction, data: bytes, offset: int, ts_ns: int,
               ref: PacketRef) -> None:
        self.ignored_bytes += len(data)

    def _nothing(self, *args: object) -> None:
        pass


def candidates_for(flow: FlowInfo, dissectors: Sequence[Dissector]) -> list[Dissector]:
    """The dissectors for the flow's transport, port-hinted ones first, registry order kept."""
    usable = [d for d in dissectors if flow.transport in d.transports]
    ports = (flow.client_port, flow.server_port)
    hinted = [d for d in usable if ports[0] in d.ports or ports[1] in d.ports]
    return hinted + [d for d in usable if d not in hinted]


def open_session(flow: FlowInfo, emit: Emit, dissectors: Sequence[Dissector], *,
                 body_limit: int = 0, detect_limit: int = DETECT_LIMIT,
                 fallback: Dissector | None = None) -> SelectingSession:
    """A session for a new flow that picks its dissector by content (see the module doc)."""
    selector = SelectingSession(flow, emit, candidates_for(flow, dissectors), body_limit,
                                detect_limit, fallback)
    if not selector._candidates:
        selector._give_up()
    return selector
