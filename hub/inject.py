"""`Injected[T]`: a route parameter that is one of the hub's parts (hub/services.py), given by
its name. Not validated: they are the hub's own objects, and msgspec would otherwise inspect a
dataclass's fields (SnapshotStore's) on every request."""

from __future__ import annotations

from typing import TypeAlias, TypeVar

from litestar.di import NamedDependency
from litestar.params import SkipValidation

T = TypeVar("T")

Injected: TypeAlias = NamedDependency[SkipValidation[T]]
