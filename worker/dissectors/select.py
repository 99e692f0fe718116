"""Choosing a flow's dissector by content, with rewind.

Until a dissector claims the flow, the selector records every call (data, with offsets, ts and
refs, and gaps) and asks the candidate dissectors about the first bytes of each direction.
Candidates are tried in a fixed order: those whose port hint matches either port first, then
the rest, each group in registry order.

The rule, which does not depend on how the bytes were split into chunks:
- A protocol whose client always speaks first (`client_first`) is not a candidate when the
  server spoke first on a connection seen from its handshake (MySQL's greeting is no HTTP,
  TLS, AMQP or PostgreSQL, which would all wait for the client's first bytes).
- The first candidate in order that does not say NO decides: MATCH claims the flow, MORE
  waits for more bytes. So a port hint wins over an equally plausible later candidate.
- An earlier MORE does not hold up a later MATCH forever: at fixed amounts of buffered bytes
  (CHECKPOINTS, counted over both directions) and when the flow closes, the first candidate
  in order that says MATCH on exactly those bytes claims the flow. The bytes at a checkpoint
  are the same however they were chunked, so the choice is too.

The claiming dissector's session gets the recorded calls replayed in their original order,
then the live calls directly (the selector rebinds its methods to the session's). Most flows
are decided on their first call: then nothing is recorded (no call list, windows or set).

Learned server hints: a server endpoint (transport, ip, port) some registered dissector claimed
is remembered (ServerHints, bounded), and a new flow to it asks that dissector first, on every
decision until it says NO: its MATCH claims the flow, its NO sends the flow to the order above
as if there were no hint, its MORE too (where a MORE at its own place in the order waits, as
always). A hint is a port hint learned from content: it changes nothing when the hinted
protocol is the one the order would choose (the same server again), and saves asking every
earlier candidate, twice when one of them said MORE on the first request (Kafka's first
request gets MORE from AMQP). Like a port hint, it wins over an earlier candidate that would
also have matched, so it is learned from claims by content only, never from the fallback.

Roles: when nothing decided them (flow.roles_guessed: no SYN, no port hint, no server seen
before), each candidate is tried again with the directions reversed, right after it was tried
the assembler's way (a protocol's evidence counts before the guess); one that claims so gets
the flow with the roles swapped (`session_flow`, `swapped`).

Gaps: detection looks at the bytes after the last gap of each direction, so a flow whose
capture started mid-connection is detected on the first message start after the gap; a gap
also lets every candidate answer again. A direction that shows no message start within
detect_limit bytes is skipped (memory stays bounded) and detection goes on after it, so a
keep-alive connection picked up in the middle of a long body is still dissected from its next
message. Skipped bytes were captured: the claiming session gets them as a gap (it must resync)
and the first exchange it emits says how many bytes detection skipped; the generic fallback
counts them as bytes of the flow. A flow every candidate refuses is handed to `fallback` when
one is given (a generic tcp/udp entry), else ignored: buffered bytes are dropped, later ones
only counted.
"""

from __future__ import annotations

from typing import Callable, Sequence

from worker.dissectors.base import Detect, Direction, Dissector, Emit, Exchange, FlowInfo, Session
# The orders and hints, compiled (re-exported: they were defined here).
from worker.dissectors.ways import Registered, ServerHints, hinted, registered
from worker.packet import PacketRef

DETECT_LIMIT = 16384
# Buffered bytes (both directions, since the last gap) at which a MATCH stops waiting for an
# earlier candidate's MORE. The first is past any greeting or first request that a detector
# can judge alone; the last is the detect limit.
CHECKPOINTS = (512, 1024, 2048, 4096, 8192, 16384)

_DATA, _GAP, _SKIP = 0, 1, 2
# Until a flow's first undecided call and after a claim or an ignore nothing is recorded: shared
# empties instead of a new list, set and windows per flow (fewer live objects for the garbage
# collector to walk; most flows never make them).
_NO_WINDOWS: tuple[bytearray, ...] = ()
_NO_CALLS: tuple[tuple, ...] = ()
_NONE_REFUSED: frozenset[int] = frozenset()
_MATCH, _MORE = Detect.MATCH, Detect.MORE
_C2S, _S2C = Direction.CLIENT_TO_SERVER, Direction.SERVER_TO_CLIENT

class SelectingSession:
    """A Session that becomes its claiming dissector's session (see the module doc)."""

    # Defaults shared by the class until a flow sets its own (less to set up per flow).
    # The recording (calls to replay, per direction the bytes since its last gap, the
    # candidates that said NO to those windows) is made by the first call that decides
    # nothing (_record): shared empties until then and again after a decision.
    _calls: list[tuple] = _NO_CALLS             # type: ignore[assignment]
    _windows: list[bytearray] = _NO_WINDOWS     # type: ignore[assignment]
    _refused: set[int] = _NONE_REFUSED          # type: ignore[assignment]
    _buffered = 0
    _first_call = True
    _hint = -1
    dissector: Dissector | None = None          # the one that claimed the flow
    session: Session | None = None
    ignored = False
    ignored_bytes = 0
    skipped_bytes = 0                           # undecided bytes skipped by detection
    server_first = False                        # the server spoke first (handshake seen)
    # The flow as the claiming session sees it (session_flow, set per flow): roles swapped
    # when the content showed the assembler's guess wrong (then the session's directions
    # are the reverse).
    swapped = False

    def __init__(self, flow: FlowInfo, emit: Emit, ways: Sequence[tuple[Dissector, bool]],
                 body_limit: int, detect_limit: int, fallback: Dissector | None,
                 on_closed: Callable[[SelectingSession], None] | None = None,
                 hints: ServerHints | None = None) -> None:
        self.flow = flow
        self._on_closed = on_closed
        self._emit = emit
        # (dissector, swapped) in the order they are asked (ways.Registered.ways).
        self._candidates: Sequence[tuple[Dissector, bool]] = ways
        self._body_limit = body_limit
        self._detect_limit = detect_limit
        self._fallback = fallback
        self._hints = hints
        # Index in _candidates of the way a learned hint names (-1: none), asked first.
        if hints is not None and hints._table:   # len(hints), without a call per flow
            self._hint = hinted(self._candidates, flow, hints)
        self.session_flow = flow

    def on_data(self, direction: Direction, data: bytes, offset: int, ts_ns: int,
                ref: PacketRef) -> None:
        if not data:
            return
        if self._first_call:
            self._first_call = False
            if direction == _S2C and offset == 0 and self.flow.handshake:
                self._server_spoke_first()
                if self.ignored or self.session is not None:
                    self.on_data(direction, data, offset, ts_ns, ref)
                    return
            # Decided on its first bytes (most flows): the call goes straight to the session
            # (or is counted), nothing recorded. Short of the first checkpoint and the detect
            # limit, this is exactly what _decide would do with those bytes alone.
            if len(data) < CHECKPOINTS[0] and len(data) <= self._detect_limit:
                if direction == _C2S:
                    decided = self._choose(data, b"")
                else:
                    decided = self._choose(b"", data)
                if decided:
                    self.on_data(direction, data, offset, ts_ns, ref)   # now the session's
                    return
                self._record()
                self._calls.append((_DATA, direction, data, offset, ts_ns, ref))
                self._windows[direction].extend(data)
                self._buffered += len(data)
                return
            self._record()
        self._calls.append((_DATA, direction, data, offset, ts_ns, ref))
        window = self._windows[direction]
        window.extend(data)
        self._buffered += len(data)
        self._decide(direction, len(data))
        if self.session is None and not self.ignored and len(window) > self._detect_limit:
            self._skip_window(direction, ts_ns)

    def _record(self) -> None:
        if self._calls is _NO_CALLS:
            self._calls = []
            self._windows = [bytearray(), bytearray()]

    def _server_spoke_first(self) -> None:
        self.server_first = True
        hinted = self._candidates[self._hint] if self._hint >= 0 else None
        self._candidates = [c for c in self._candidates if not getattr(c[0], "client_first", False)]
        self._hint = self._candidates.index(hinted) if hinted in self._candidates else -1
        if not self._candidates:
            self._give_up()

    def _skip_window(self, direction: Direction, ts_ns: int) -> None:
        """A direction that shows no message start within detect_limit bytes (a capture that
        began in the middle of a long body) is skipped, and detection goes on with the bytes
        after it: the next message start on either side can still claim the flow."""
        kept: list[tuple] = []
        gap_at: int | None = None
        first_offset = skipped = 0
        for call in self._calls:
            if call[0] == _DATA and call[1] == direction:
                if gap_at is None:
                    gap_at, first_offset = len(kept), call[3]
                    kept.append(call)
                skipped += len(call[2])
            else:
                kept.append(call)
        if gap_at is None:
            return
        kept[gap_at] = (_SKIP, direction, first_offset, skipped, ts_ns)
        self._calls = kept
        self._buffered -= skipped
        self.skipped_bytes += skipped
        self._windows[direction].clear()
        self._refused = _NONE_REFUSED

    # on_gap and on_close are rare (once per flow at most for most): they go through the
    # selector, where on_data is rebound to the session's (one bound method per flow, not three).
    def on_gap(self, direction: Direction, offset: int, length: int, ts_ns: int) -> None:
        if self.session is not None:
            self.session.on_gap(direction, offset, length, ts_ns)
            return
        if self.ignored:
            return
        self._first_call = False
        self._record()
        self._calls.append((_GAP, direction, offset, length, ts_ns))
        self._windows[direction].clear()
        self._refused = _NONE_REFUSED

    def on_close(self, ts_ns: int) -> None:
        if self.session is not None:
            self.session.on_close(ts_ns)
            if self._on_closed is not None:
                self._on_closed(self)
            return
        if self.ignored:
            return
        # Nothing claimed the flow before it ended: the bytes there are are all there will
        # be, so a MATCH no longer waits for an earlier MORE.
        windows = self._windows
        client, server = (bytes(windows[0]), bytes(windows[1])) if windows else (b"", b"")
        winner = self._first_match(client, server) if client or server else None
        if winner is not None:
            self._claim(*winner)
        elif self._fallback is not None:
            self._claim(self._fallback)
        else:
            self._ignore()
            return
        self.on_close(ts_ns)   # now the claiming session's on_close

    def _refuse(self, i: int) -> None:
        if self._refused is _NONE_REFUSED:
            self._refused = set()
        self._refused.add(i)

    def _first_match(self, client: bytes, server: bytes) -> tuple[Dissector, bool] | None:
        """The first candidate in order that says MATCH, earlier MOREs notwithstanding."""
        for i, (dissector, swapped) in enumerate(self._candidates):
            if i in self._refused:
                continue
            answer = _ask(dissector, swapped, client, server)
            if answer is _MATCH:
                return dissector, swapped
            if answer is Detect.NO:
                self._refuse(i)
        return None

    def _decide(self, direction: Direction, size: int) -> None:
        client, server = bytes(self._windows[0]), bytes(self._windows[1])
        total = len(client) + len(server)
        # Most flows are decided on their first bytes, short of the first checkpoint.
        for checkpoint in CHECKPOINTS if total >= CHECKPOINTS[0] else ():
            if total - size < checkpoint <= total:
                # The windows as they were when exactly `checkpoint` bytes were buffered.
                cut = total - checkpoint
                if direction == _C2S:
                    winner = self._first_match(client[:len(client) - cut], server)
                else:
                    winner = self._first_match(client, server[:len(server) - cut])
                if winner is not None:
                    self._claim(*winner)
                    return
        self._choose(client, server)

    def _choose(self, client: bytes, server: bytes) -> bool:
        """Ask the hinted candidate, then the candidates in order, about these windows: the
        first that does not say NO decides. True when the flow was claimed or given up."""
        candidates, refused, hint = self._candidates, self._refused, self._hint
        hint_answer: Detect | None = None
        if hint >= 0 and hint not in refused:
            dissector, swapped = candidates[hint]
            # _ask, inline: the one question most new flows get (a learned server's)
            hint_answer = dissector.detect(server, client) if swapped else \
                dissector.detect(client, server)
            if hint_answer is _MATCH:
                self._claim(dissector, swapped)
                return True
            if hint_answer is Detect.NO:
                self._refuse(hint)   # not asked again about these windows
                refused = self._refused
        for i, (dissector, swapped) in enumerate(candidates):
            if i in refused:
                continue
            # The hinted one's MORE counts at its own place in the order.
            answer = hint_answer if i == hint and hint_answer is not None else \
                _ask(dissector, swapped, client, server)
            if answer is _MATCH:
                self._claim(dissector, swapped)
                return True
            if answer is _MORE:
                return False
            self._refuse(i)
            refused = self._refused
        self._give_up()
        return True

    def _give_up(self) -> None:
        if self._fallback is not None:
            self._claim(self._fallback)
        else:
            self._ignore()

    def _claim(self, dissector: Dissector, swapped: bool = False) -> None:
        session: Session
        flow = self.flow
        if swapped:
            flow = self.session_flow = FlowInfo(flow.transport, flow.server_ip, flow.server_port,
                                                flow.client_ip, flow.client_port)
            self.swapped = True
            session = _Swapped(dissector.session(flow, self._emit_noting_skips(),
                                                 self._body_limit))
        else:
            session = dissector.session(
                flow, self._emit_noting_skips() if self.skipped_bytes else self._emit,
                self._body_limit)
        if self._hints is not None and dissector is not self._fallback:
            self._hints.learn((flow.transport, flow.server_ip, flow.server_port), dissector)
        self.dissector, self.session = dissector, session
        # Back to the shared empties (a flow decided on its first call still has them: no
        # instance attributes added then).
        calls = self._calls
        if calls is not _NO_CALLS:
            self._calls = _NO_CALLS                    # type: ignore[assignment]
            self._windows = _NO_WINDOWS                # type: ignore[assignment]
        if self._refused is not _NONE_REFUSED:
            self._refused = _NONE_REFUSED              # type: ignore[assignment]
        # From now on data goes straight to the session.
        self.on_data = session.on_data          # type: ignore[method-assign]
        if not calls:
            return
        on_skipped = getattr(session, "on_skipped", session.on_gap)
        for call in calls:
            if call[0] == _DATA:
                session.on_data(*call[1:])
            elif call[0] == _GAP:
                session.on_gap(*call[1:])
            else:
                on_skipped(*call[1:])

    def held_bytes(self) -> int:
        """Before a dissector claims the flow: the calls kept to replay and the detection
        windows; then its session's."""
        if self.session is not None:
            return self.session.held_bytes()
        if self.ignored:
            return 0
        return self._buffered + sum(len(window) for window in self._windows)

    @property
    def session_skipped_bytes(self) -> int:
        """Bytes the claiming session passed over looking for a message start (0 for a
        session that does not count them)."""
        session = self.session
        if isinstance(session, _Swapped):
            session = session._session
        return getattr(session, "skipped_bytes", 0)

    def _emit_noting_skips(self) -> Emit:
        """The emit of a claiming session: its first exchange says what detection skipped
        (the session saw those bytes as a gap, but they were captured)."""
        if not self.skipped_bytes:
            return self._emit
        emit, noted = self._emit, False

        def emit_first_noted(exchange: Exchange) -> None:
            nonlocal noted
            if not noted:
                noted = True
                exchange.notes.append(f"detection skipped {self.skipped_bytes} captured bytes "
                                      "(no message start in them)")
            emit(exchange)
        return emit_first_noted

    def _ignore(self) -> None:
        self.ignored = True
        self.ignored_bytes += self._buffered
        self._calls = _NO_CALLS                        # type: ignore[assignment]
        self._windows = _NO_WINDOWS                    # type: ignore[assignment]
        self._refused = _NONE_REFUSED                  # type: ignore[assignment]
        self.on_data = self._count              # type: ignore[method-assign]

    def _count(self, direction: Direction, data: bytes, offset: int, ts_ns: int,
               ref: PacketRef) -> None:
        self.ignored_bytes += len(data)


def _ask(dissector: Dissector, swapped: bool, client: bytes, server: bytes) -> Detect:
    return dissector.detect(server, client) if swapped else dissector.detect(client, server)


class _Swapped:
    """A session seen through reversed roles: the assembler's client is its server."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self.on_close = session.on_close

    def on_data(self, direction: Direction, data: bytes, offset: int, ts_ns: int,
                ref: PacketRef) -> None:
        self._session.on_data(Direction(1 - direction), data, offset, ts_ns, ref)

    def on_gap(self, direction: Direction, offset: int, length: int, ts_ns: int) -> None:
        self._session.on_gap(Direction(1 - direction), offset, length, ts_ns)

    def held_bytes(self) -> int:
        return self._session.held_bytes()


def candidates_for(flow: FlowInfo, dissectors: Sequence[Dissector]) -> list[Dissector]:
    """The dissectors for the flow's transport, port-hinted ones first, registry order kept."""
    return [d for d, swapped in registered(tuple(dissectors)).ways(flow) if not swapped]


def open_session(flow: FlowInfo, emit: Emit, dissectors: Sequence[Dissector], *,
                 body_limit: int = 0, detect_limit: int = DETECT_LIMIT,
                 fallback: Dissector | None = None,
                 on_closed: Callable[[SelectingSession], None] | None = None,
                 hints: ServerHints | None = None,
                 shared: Registered | None = None) -> SelectingSession:
    """A session for a new flow that picks its dissector by content (see the module doc);
    on_closed is called with it after a claiming session's on_close. `hints` are the learned
    server hints to use and add to; by default those shared by these dissector instances (one
    Dissection's: the worker makes its dissectors once per Dissection, so no two share them).
    `shared`: registered(dissectors), when the caller keeps it (not looked up per flow)."""
    if shared is None:
        shared = registered(dissectors if type(dissectors) is tuple else tuple(dissectors))
    selector = SelectingSession(flow, emit, shared.ways(flow), body_limit, detect_limit,
                                fallback, on_closed, shared.hints if hints is None else hints)
    if not selector._candidates:
        selector._give_up()
    return selector
