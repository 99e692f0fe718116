"""The hub's routes, one Litestar Controller per resource; what they use is injected by name
(hub/services.py), so adding a route touches one controller."""

API = "/api/v1"
PCAP_MEDIA_TYPE = "application/vnd.tcpdump.pcap"
