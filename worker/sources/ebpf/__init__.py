"""eBPF TLS capture: cleartext from libssl's SSL_read/SSL_write through bcc uprobes, stored as
synthesized TCP packets of the real connection (see docs/TLS.md).

Importing this package does not import bcc: the loader does, in the capture process only.
"""

from __future__ import annotations

from worker.sources.ebpf.loader import EbpfUnavailable
from worker.sources.ebpf.source import EbpfStatus, EbpfTlsSource, open_tls_source
from worker.sources.ebpf.synth import MARK, is_synthesized, mark_offset

__all__ = ["MARK", "EbpfStatus", "EbpfTlsSource", "EbpfUnavailable", "is_synthesized",
           "mark_offset", "open_tls_source"]
