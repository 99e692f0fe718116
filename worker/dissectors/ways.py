"""What the selector asks first about a new flow: the candidate orders and the learned server
hints (worker.dissectors.select's module doc says how they are used).

Apart from select.py so that it is compiled (shark/compiled.py): every new flow looks its order
and its hint up here, and the selector's classes stay interpreted (they rebind their on_data).
"""

from __future__ import annotations

from typing import Any, Final, Sequence

from worker.dissectors.base import Dissector, FlowInfo

# Learned hints kept, most recently claimed last. A hint pays for a server that gets many
# connections, and a node's busy servers are its services' endpoints: tens to hundreds. 4096
# holds all of those with room for churn, in well under a megabyte (a 3-tuple key and a dict
# slot each), while a scan of one-off endpoints only cycles the oldest out.
MAX_SERVER_HINTS: Final = 4096
# Sets of dissector instances whose Registered is kept (an lru_cache's maxsize before): a
# worker has one or two (its Dissection's, and TLS cleartext's).
MAX_REGISTERED: Final = 16

# (transport, ip, port). A tuple of any length to mypyc: a tuple[str, bytes, int] would be
# unboxed into a C struct, and boxed into a new tuple again at every use as a dict key.
Endpoint = tuple[Any, ...]
Way = tuple[Dissector, bool]        # (dissector, swapped): asked with the roles reversed


class ServerHints:
    """Server endpoints and the dissector that last claimed a flow to them, least recently
    claimed first; at most `limit`."""

    def __init__(self, limit: int = MAX_SERVER_HINTS) -> None:
        if limit < 1:
            raise ValueError(f"server hint limit {limit}: expected at least 1")
        self._table: dict[Endpoint, Dissector] = {}
        self._limit = limit
        # The table's last key (learn alone adds and moves keys, and evicts the first) and its
        # dissector.
        self._last: Endpoint | None = None
        self._last_dissector: Dissector | None = None
        # The table's changes, counted, and what server() last found (valid while the count
        # is the same): a new flow per query to one server asks for the same endpoint.
        self._changes = 0
        self._found_at = -1
        self._found_transport = ""
        self._found_ip = b""
        self._found_port = -1
        self._found: Dissector | None = None

    def __len__(self) -> int:
        return len(self._table)

    def get(self, endpoint: Endpoint) -> Dissector | None:
        return self._table.get(endpoint)

    def server(self, transport: str, ip: bytes, port: int) -> Dissector | None:
        """get((transport, ip, port)); the last answer again, without a key made and hashed,
        while the table has not changed since and the endpoint is the same."""
        if self._found_at == self._changes and port == self._found_port and \
                ip == self._found_ip and transport == self._found_transport:
            return self._found
        found = self._table.get((transport, ip, port))
        self._found_at, self._found = self._changes, found
        self._found_transport, self._found_ip, self._found_port = transport, ip, port
        return found

    def learn(self, endpoint: Endpoint, dissector: Dissector) -> None:
        table = self._table
        # The most recent already (a new flow per query to one DNS server): nothing moves.
        if dissector is self._last_dissector and endpoint == self._last:
            return
        if table.pop(endpoint, None) is None and len(table) >= self._limit:
            del table[next(iter(table))]
        table[endpoint] = dissector
        self._last, self._last_dissector = endpoint, dissector
        self._changes += 1


class Registered:
    """What every flow over one set of dissector instances (a Dissection's) shares: the ports
    that hint at some dissector, the candidate orders, the learned server hints. Made once per
    such set (registered()), so a new flow hashes the set once at most."""

    def __init__(self, dissectors: tuple[Dissector, ...]) -> None:
        self.dissectors = dissectors
        self.hint_ports = frozenset(port for d in dissectors for port in d.ports)
        # (transport, client port, server port, guessed) -> the ways in order; ports that
        # hint nothing are keyed as -1, so there are few keys (bounded by the hint ports).
        self.orders: dict[tuple[str, int, int, bool], tuple[Way, ...]] = {}
        self.hints = ServerHints()
        # The last key ways() looked up, as its parts, and its ways (orders' entries never
        # change): flows one after another to one server have the same key.
        self._key_transport = ""
        self._key_client = self._key_server = -2
        self._key_guessed = False
        self._key_ways: tuple[Way, ...] | None = None

    def ways(self, flow: FlowInfo) -> tuple[Way, ...]:
        """(dissector, swapped) in the order they are asked: port-hinted dissectors first,
        registry order kept; with guessed roles each is also tried the other way round, right
        after the assembler's way."""
        ports, client_port, server_port = self.hint_ports, flow.client_port, flow.server_port
        client = client_port if client_port in ports else -1
        server = server_port if server_port in ports else -1
        transport, guessed = flow.transport, flow.roles_guessed
        ways = self._key_ways
        if ways is not None and client == self._key_client and server == self._key_server \
                and guessed == self._key_guessed and transport == self._key_transport:
            return ways
        key = (transport, client, server, guessed)
        ways = self.orders.get(key)
        if ways is None:
            ways = self.orders[key] = _order(self.dissectors, key)
        self._key_transport, self._key_client, self._key_server = transport, client, server
        self._key_guessed, self._key_ways = guessed, ways
        return ways


def _order(dissectors: tuple[Dissector, ...], key: tuple[str, int, int, bool]) -> tuple[Way, ...]:
    transport, client_port, server_port, guessed = key
    usable = [d for d in dissectors if transport in d.transports]
    hinted = [d for d in usable if client_port in d.ports or server_port in d.ports]
    sides = (False, True) if guessed else (False,)
    return tuple((d, swapped) for d in hinted + [d for d in usable if d not in hinted]
                 for swapped in sides)


_REGISTERED: Final[dict[tuple[Dissector, ...], Registered]] = {}


def registered(dissectors: tuple[Dissector, ...]) -> Registered:
    """The Registered of these dissector instances (the same object for the same tuple; the
    MAX_REGISTERED most recently used are kept)."""
    found = _REGISTERED.get(dissectors)
    if found is None:
        found = Registered(dissectors)
        if len(_REGISTERED) >= MAX_REGISTERED:
            del _REGISTERED[next(iter(_REGISTERED))]
    elif next(reversed(_REGISTERED)) is dissectors:
        return found            # the most recent already (a Dissection's own tuple)
    else:
        del _REGISTERED[dissectors]
    _REGISTERED[dissectors] = found
    return found


def hinted(candidates: Sequence[Way], flow: FlowInfo, hints: ServerHints) -> int:
    """The index of the way a learned hint names for this flow's server (or, with guessed
    roles, its client taken for the server); -1 for none or for the first way already."""
    dissector = hints.server(flow.transport, flow.server_ip, flow.server_port)
    swapped = False
    if dissector is None and flow.roles_guessed:
        dissector = hints._table.get((flow.transport, flow.client_ip, flow.client_port))
        swapped = True
    if dissector is None or not candidates:
        return -1
    # One scan by identity and side: a way is (dissector, swapped), and a Registered's
    # dissectors are distinct instances.
    for i, (candidate, side) in enumerate(candidates):
        if candidate is dissector and side == swapped:
            return -1 if i == 0 else i
    return -1
