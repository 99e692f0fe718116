__version__ = "0.1.0"

# Before any compiled module can be imported: a stale build (or SHARK_PURE_PYTHON=1) means the
# .py files (shark/compiled.py).
from shark.compiled import install_guard as _install_guard

_install_guard()
