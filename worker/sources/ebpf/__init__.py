"""eBPF TLS capture: cleartext from libssl's SSL_read/SSL_write through bcc uprobes, stored as
synthesized TCP packets of the real connection (see docs/TLS.md).

Importing this package does not import bcc: the loader does, in the capture process only. It
imports nothing else either: dissection needs only .synth and the capture process .status on
every start, and only --tls needs .source (open_tls_source) and its loader (EbpfUnavailable),
so those are imported from their modules where used.
"""
