"""Flows and TCP reassembly: decoded packets in, in-order byte streams to dissector Sessions.

See worker.assembler.assembler for the Assembler; flows.py holds per-flow state and roles,
tcp.py the sequence arithmetic and the out-of-order buffer.
"""

from worker.assembler.assembler import CLOSED_LINGER_NS, Assembler, AssemblerStats
from worker.assembler.flows import SERVER_PORT_HINTS, is_server_port, sender_is_client

__all__ = ["Assembler", "AssemblerStats", "CLOSED_LINGER_NS", "SERVER_PORT_HINTS",
           "is_server_port", "sender_is_client"]
