"""The objects of one list+watch, and the changes the hub's parts are told about (no I/O)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hub.kube import objects


@dataclass(frozen=True)
class Change:
    """One object as it is now (or, when deleted, as it was last), and when the hub learned it."""
    type: str                   # ADDED | MODIFIED | DELETED
    obj: dict[str, Any]
    at: float                   # epoch seconds

    @property
    def deleted(self) -> bool:
        return self.type == "DELETED"


class Store:
    """The objects of one list+watch by namespace/name. ADDED and MODIFIED are decided by
    what the store holds (not by the event's word), and an object re-created under the same
    name (another uid) is the old one DELETED and the new one ADDED."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}

    def replace(self, items: list[dict[str, Any]], at: float) -> list[Change]:
        new = {objects.key(obj): obj for obj in items}
        changes = [Change("DELETED", old, at) for k, old in self.objects.items()
                   if k not in new or objects.uid(new[k]) != objects.uid(old)]
        for k, obj in new.items():
            old = self.objects.get(k)
            if old is None or objects.uid(old) != objects.uid(obj):
                changes.append(Change("ADDED", obj, at))
            elif objects.resource_version(old) != objects.resource_version(obj):
                changes.append(Change("MODIFIED", obj, at))
        self.objects = new
        return changes

    def apply(self, event_type: str, obj: dict[str, Any], at: float) -> list[Change]:
        k = objects.key(obj)
        old = self.objects.get(k)
        if event_type == "DELETED":
            if old is None:
                return []
            del self.objects[k]
            return [Change("DELETED", obj, at)]
        self.objects[k] = obj
        if old is None:
            return [Change("ADDED", obj, at)]
        if objects.uid(old) != objects.uid(obj):
            return [Change("DELETED", old, at), Change("ADDED", obj, at)]
        return [Change("MODIFIED", obj, at)]
