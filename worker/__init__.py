# The guard against stale compiled modules runs before any of this package's modules can be
# imported (shark/compiled.py; importing shark installs it).
import shark  # noqa: F401
