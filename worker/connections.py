"""Per-connection TCP facts, and connections that failed.

The assembler keeps one TcpFacts per TCP flow (set from SYN, SYN-ACK, FIN, RST, retransmitted
segments and zero-window advertisements: nothing on the per-packet fast path but a comparison
for pure ACKs). Every entry of the flow carries them as `Entry.tcp` (worker.dissection), and a
connection that failed is an entry of its own (protocol `tcp`) when no protocol entry carries
the failure:

- refused: the SYN was answered by an RST (no SYN-ACK);
- timeout: SYNs unanswered for SYN_TIMEOUT_S seconds (reported once, when that time has passed
  in capture time, or at the end of the flow or capture);
- abandoned: the handshake completed but neither side sent a byte, a FIN or an RST before the
  flow's idle timeout (half-open: one end gone without a word, or a client that connected and
  never asked);
- reset: an RST before any FIN (or the server's after its own FIN: a request on a keep-alive it
  had closed). An entry emitted as the RST closed the flow carries it instead: an exchange the
  RST cut (`complete: false`, note `connection reset by server before the response` / `...
  mid-response`), or the generic entry of an unrecognised flow. A client's RST after its
  exchanges all completed (how some clients close) gets no entry of its own.

UDP flows keep a TcpFacts too, for `failure` alone: an ICMP port unreachable quoting one of
their datagrams refuses them (the waiting request carries it, `Entry.udp`).
"""

from __future__ import annotations

from typing import Final, Literal

from shark.model import TcpInfo
from worker.dissectors.base import Direction, Exchange, FlowInfo
from worker.dissectors.generic import endpoint_text

# Linux retransmits an unanswered SYN after 1 s, then 1 s (tcp_syn_linear_timeouts, 6.5+) or
# 2 s later: by 3 s at least two retransmissions went unanswered.
SYN_TIMEOUT_S: Final = 3.0
SYN_TIMEOUT_NS: Final = int(SYN_TIMEOUT_S * 1e9)

Failure = Literal["refused", "reset", "timeout", "abandoned"]
UNREACHABLE_NOTE: Final = "refused: ICMP port unreachable (nothing listens on that port)"
_SIDES: Final[tuple[Literal["client"], Literal["server"]]] = ("client", "server")


class TcpFacts:
    """What the assembler saw of one connection (a UDP flow: `failure` alone). Sides are
    Direction values (0 client)."""

    __slots__ = ("syn_ns", "synack_ns", "syns", "retransmitted_bytes", "zero_windows",
                 "fin_by", "rst_by", "rst_ns", "failure", "carried", "first_ref", "last_ref",
                 "_key", "_info")

    def __init__(self) -> None:
        self.syn_ns: int | None = None        # the first SYN
        self.synack_ns: int | None = None     # the first SYN-ACK
        self.syns = 0                         # SYNs sent by the client (retransmissions too)
        self.retransmitted_bytes = 0          # payload bytes seen again (both directions)
        self.zero_windows = 0                 # segments advertising a zero receive window
        self.fin_by: int | None = None        # the side that sent the first FIN
        self.rst_by: int | None = None        # the side that sent the RST
        self.rst_ns: int | None = None
        self.failure: Failure | None = None   # once known
        self.carried = False                  # a protocol entry carries the failure
        self.first_ref: tuple[int, int] | None = None  # the packet that opened the flow
        self.last_ref: tuple[int, int] | None = None   # the last SYN or the RST
        # What _info was made from: syns, synack_ns, retransmitted_bytes, zero_windows, fin_by,
        # rst_by, failure, swapped (typed: compiled, read without boxing it, item by item).
        self._key: tuple[int, int | None, int, int, int | None, int | None, str | None, bool] = \
            (0, None, 0, 0, None, None, None, False)
        self._info: TcpInfo | None = None

    def reset_failure(self) -> Failure | None:
        """The failure an RST means: refused before a SYN-ACK, reset after it. An RST after a FIN
        ends a close (RabbitMQ answering the client's FIN, Python's ssl after its own FIN): no
        failure, except the server's after its own FIN (a request on a keep-alive it closed)."""
        if self.rst_by is None:
            return None
        server = Direction.SERVER_TO_CLIENT
        if self.syn_ns is not None and self.synack_ns is None and self.rst_by == server:
            return "refused"
        if self.fin_by is not None and not (self.fin_by == self.rst_by == server):
            return None
        return "reset"

    def info(self, swapped: bool = False) -> TcpInfo:
        """The facts as an entry carries them (`swapped`: the session's roles are reversed).
        Made again only when a fact changed: most entries of a connection share one (entries
        are encoded as they are made, never changed after)."""
        info, key = self._info, self._key
        # Item by item: a tuple made and compared per entry boxed every int of both.
        if info is not None and key[0] == self.syns and key[1] == self.synack_ns and \
                key[2] == self.retransmitted_bytes and key[3] == self.zero_windows and \
                key[4] == self.fin_by and key[5] == self.rst_by and key[6] == self.failure and \
                key[7] == swapped:
            return info

        def side(value: int | None) -> Literal["client", "server"] | None:
            if value is None:
                return None
            return _SIDES[1 - value if swapped else value]
        handshake = None
        if self.syn_ns is not None and self.synack_ns is not None:
            handshake = round(max(0, self.synack_ns - self.syn_ns) / 1e6, 3)
        self._key = (self.syns, self.synack_ns, self.retransmitted_bytes, self.zero_windows,
                     self.fin_by, self.rst_by, self.failure, swapped)
        self._info = TcpInfo(handshake_ms=handshake, syns=self.syns,
                             retransmitted_bytes=self.retransmitted_bytes,
                             zero_windows=self.zero_windows, closed_by=side(self.fin_by),
                             rst=side(self.rst_by), failure=self.failure)
        return self._info


def reset_note(facts: TcpFacts, exchange: Exchange, swapped: bool = False) -> str:
    """The note of an exchange an RST cut: who reset, and whether an answer had begun."""
    by = facts.info(swapped).rst
    when = "before the response" if exchange.response is None or not exchange.response_size \
        else "mid-response"
    return f"connection reset by {by} {when}"


def failure_exchange(flow: FlowInfo, facts: TcpFacts, ts_ns: int,
                     first_ref: tuple[int, int]) -> Exchange:
    """A `tcp` entry for a connection that failed with no protocol entry to carry it."""
    failure = facts.failure
    start = facts.syn_ns if facts.syn_ns is not None else (facts.rst_ns or ts_ns)
    target = f"{endpoint_text(flow.server_ip, flow.server_port)}"
    if failure == "refused" and flow.transport == "udp":
        note = UNREACHABLE_NOTE
    elif failure == "refused":
        note = "connection refused (SYN answered by RST)"
    elif failure == "timeout":
        note = f"connection timed out ({facts.syns} SYN{'s' * (facts.syns != 1)} unanswered)"
    elif failure == "abandoned":
        idle = (ts_ns - (facts.synack_ns or ts_ns)) / 1e9
        note = f"connection abandoned (established, then nothing from either side for {idle:.0f} s: half-open)"
    else:
        note = f"connection reset by {facts.info().rst}"
    summary = f"port unreachable: {target}" if flow.transport == "udp" else \
        f"{note.split(' (')[0]}: {target}"
    end = facts.rst_ns if failure not in ("timeout", "abandoned") else None
    last_ref = facts.last_ref or first_ref
    return Exchange(protocol=flow.transport, start_ns=start, end_ns=end, summary=summary,
                    request={"failure": failure}, response=None, status=None,
                    complete=failure not in ("timeout", "abandoned"), first_ref=first_ref, last_ref=last_ref,
                    client_offset=0, server_offset=None, notes=[note])
