"""The hub: one API over every node's worker (ARCHITECTURE.md, Hub API)."""

VERSION = "0.1.0"   # in /status, the HAR creator and the OpenAPI schema
