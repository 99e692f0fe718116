"""The object store of the Kubernetes API double (tests/support/kubeapi.py).

What etcd and the generic registry do for the real API, for the calls this project makes:
resourceVersion (one counter for everything, as etcd's revision), uid, creationTimestamp,
generation, a few server-side defaults, status subresources (main-resource writes keep the
stored status), managedFields with server-side apply ownership and conflicts, namespace
termination, garbage collection by ownerReferences, and an event log that watches read from
(compactable, so a watch from a compacted resourceVersion gets 410 Expired).
"""

from __future__ import annotations

import base64
import binascii
import copy
import ipaddress
import itertools
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from support.kubeapi_merge import (Path, PatchError, apply_fields, conflicts, fields_v1, json_patch, merge_patch,
                                   owned_paths, parse_fields_v1, render_path, strategic_merge_patch)
from support.kubeapi_model import (ApiError, Resource, Selector, already_exists, invalid, modified_conflict,
                                   name_problem, not_found)

Key = tuple[Resource, str, str]       # resource, namespace ("" if cluster-scoped), name
OwnerKey = tuple[str, str]            # manager, operation (Apply | Update): managedFields entries


def now_rfc3339() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Event:
    rv: int
    type: str                          # ADDED | MODIFIED | DELETED
    resource: Resource
    object: dict[str, Any]
    old: dict[str, Any] | None = None  # the object before a MODIFIED or DELETED (selector transitions, snapshots)


@dataclass
class Manager:
    operation: str                     # Apply | Update
    api_version: str
    time: str
    paths: set[Path] = field(default_factory=set)


QUANTITY_SUFFIXES = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
                     "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}


def quantity(text: str) -> float:
    """A resource.Quantity (5Gi, 500M, 1.5G, 1024) as a number; 422-worthy input as a ValueError."""
    number = text.rstrip("kMGTPEi")
    return float(number) * QUANTITY_SUFFIXES[text[len(number):]]


class Store:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.objects: dict[Key, dict[str, Any]] = {}
        self.owners: dict[Key, dict[OwnerKey, Manager]] = {}
        self.events: list[Event] = []
        self.revision = 1
        self.compacted = 0             # watches from a resourceVersion below this get 410
        self._cluster_ips = itertools.count(10)
        self.namespace_finalize_delay = 0.2     # the namespace controller takes a moment, as in a cluster
        # StorageClasses the cluster has (the first is its default) and those that allow volume expansion
        self.storage_classes: list[str] = ["standard"]
        self.expandable_storage_classes: set[str] = set()
        self.on_event: list[Callable[[Event], None]] = []

    # ---- reading ------------------------------------------------------------------------------

    def get(self, resource: Resource, namespace: str | None, name: str) -> dict[str, Any]:
        with self.lock:
            obj = self.objects.get((resource, namespace or "", name))
            if obj is None:
                raise not_found(resource, name)
            return copy.deepcopy(obj)

    def find(self, resource: Resource, namespace: str | None, name: str) -> dict[str, Any] | None:
        with self.lock:
            obj = self.objects.get((resource, namespace or "", name))
            return copy.deepcopy(obj) if obj is not None else None

    def list(self, resource: Resource, selector: Selector) -> tuple[list[dict[str, Any]], int]:
        with self.lock:
            items = [copy.deepcopy(obj) for (res, ns, name), obj in sorted(
                self.objects.items(), key=lambda kv: (kv[0][1], kv[0][2])) if res == resource
                and selector.matches(obj)]
            return items, self.revision

    def list_at(self, resource: Resource, selector: Selector, revision: int) -> list[dict[str, Any]]:
        """The objects as they were at `revision` (what etcd serves a continued list from): the
        current ones with the later events undone. ApiError 410 once compaction forgot them."""
        with self.lock:
            if revision < self.compacted:
                raise ApiError(410, "too old resource version", "Expired")
            objects = {(k[1], k[2]): obj for k, obj in self.objects.items() if k[0] == resource}
            for event in reversed(self.events):
                if event.rv <= revision:
                    break
                if event.resource != resource:
                    continue
                meta = event.object["metadata"]
                key = (meta.get("namespace") or "", meta["name"])
                if event.type == "ADDED":
                    objects.pop(key, None)
                elif event.old is not None:
                    objects[key] = event.old
            return [copy.deepcopy(obj) for _, obj in sorted(objects.items()) if selector.matches(obj)]

    # ---- writing ------------------------------------------------------------------------------

    def _bump(self) -> int:
        self.revision += 1
        return self.revision

    def _emit(self, event: Event) -> None:
        self.events.append(event)
        self.changed.notify_all()
        for listener in list(self.on_event):
            listener(event)

    def _check_namespace(self, resource: Resource, namespace: str | None, name: str) -> None:
        if not resource.namespaced:
            return
        from support.kubeapi_model import BY_PATH
        ns_resource = BY_PATH[("", "v1", "namespaces")]
        ns = self.objects.get((ns_resource, "", namespace or ""))
        if ns is None:
            raise not_found(ns_resource, namespace or "")
        if (ns.get("status") or {}).get("phase") == "Terminating":
            raise ApiError(403, f'{resource.qualified} "{name}" is forbidden: unable to create new content in '
                           f"namespace {namespace} because it is being terminated",
                           details={"name": name, "group": resource.group, "kind": resource.plural,
                                    "causes": [{"reason": "NamespaceTerminating", "field": "metadata.namespace",
                                                "message": f"namespace {namespace} is being terminated"}]})

    def _validate_identity(self, resource: Resource, namespace: str | None, body: dict[str, Any],
                           url_name: str | None) -> str:
        if not isinstance(body, dict):
            raise ApiError(400, "the body of the request was in an unknown format")
        api_version, kind = body.get("apiVersion"), body.get("kind")
        if api_version is not None and kind is not None and (api_version, kind) != (resource.api_version,
                                                                                    resource.kind):
            raise ApiError(400, f"the API version in the data ({api_version}) does not match the expected "
                           f"API version ({resource.api_version})" if api_version != resource.api_version
                           else f"{kind} in version \"{resource.version}\" cannot be handled as a "
                           f"{resource.kind}: the body's kind does not match the URL")
        meta = body.get("metadata")
        if meta is not None and not isinstance(meta, dict):
            raise ApiError(400, "metadata: expected an object")
        meta = meta or {}
        name = meta.get("name") or ""
        if url_name is not None and name and name != url_name:
            raise ApiError(400, f"the name of the object ({name}) does not match the name on the URL "
                           f"({url_name})")
        name = name or url_name or ""
        body_ns = meta.get("namespace")
        if resource.namespaced and body_ns and namespace and body_ns != namespace:
            raise ApiError(400, "the namespace of the provided object does not match the namespace sent "
                           "on the request")
        problem = name_problem(resource, name)
        if problem:
            raise invalid(resource, name, "metadata.name", problem,
                          "FieldValueRequired" if not name else "FieldValueInvalid")
        for field_name in ("labels", "annotations"):
            values = meta.get(field_name)
            if values is not None and (not isinstance(values, dict) or
                                       not all(isinstance(v, str) for v in values.values())):
                raise invalid(resource, name, f"metadata.{field_name}", "Invalid value: values must be strings")
        return name

    def _defaults(self, resource: Resource, obj: dict[str, Any]) -> None:
        """The few server-side defaults the project's code can observe."""
        meta = obj["metadata"]
        spec = obj.setdefault("spec", {}) if resource.plural in (
            "pods", "services", "deployments", "daemonsets", "replicasets", "namespaces") else None
        if resource.plural == "namespaces":
            meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = meta["name"]
            spec.setdefault("finalizers", ["kubernetes"])
            obj.setdefault("status", {}).setdefault("phase", "Active")
        elif resource.plural == "services":
            spec.setdefault("type", "ClusterIP")
            spec.setdefault("sessionAffinity", "None")
            if "clusterIP" not in spec:
                n = next(self._cluster_ips)
                spec["clusterIP"] = str(ipaddress.ip_address("10.96.0.0") + n)
            spec.setdefault("clusterIPs", [spec["clusterIP"]])
            for port in spec.get("ports") or []:
                if isinstance(port, dict):
                    port.setdefault("protocol", "TCP")
                    port.setdefault("targetPort", port.get("port"))
        elif resource.plural == "pods":
            spec.setdefault("restartPolicy", "Always")
            spec.setdefault("dnsPolicy", "ClusterFirst")
            spec.setdefault("schedulerName", "default-scheduler")
            spec.setdefault("serviceAccountName", "default")
            obj.setdefault("status", {}).setdefault("phase", "Pending")
        elif resource.plural in ("deployments", "replicasets"):
            spec.setdefault("replicas", 1)
            spec.setdefault("revisionHistoryLimit", 10)
            if resource.plural == "deployments":
                spec.setdefault("progressDeadlineSeconds", 600)
                spec.setdefault("strategy", {"type": "RollingUpdate",
                                             "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}})
        elif resource.plural == "secrets":
            # as the real API: data is base64 (checked), stringData is folded into data and never stored
            obj.setdefault("type", "Opaque")
            data = obj.get("data") or {}
            for key, value in data.items():
                try:
                    base64.b64decode(value if isinstance(value, str) else "!", validate=True)
                except (binascii.Error, ValueError):
                    raise ApiError(400, f'Secret in version "v1" cannot be handled as a Secret: illegal base64 '
                                   f"data in data.{key}") from None
            for key, value in (obj.pop("stringData", None) or {}).items():
                data[key] = base64.b64encode(str(value).encode()).decode()
            if data:
                obj["data"] = data
        elif resource.plural == "persistentvolumeclaims":
            spec = obj.setdefault("spec", {})
            # the DefaultStorageClass admission plugin: a claim without a class gets the default
            if "storageClassName" not in spec and self.storage_classes:
                spec["storageClassName"] = self.storage_classes[0]
            spec.setdefault("volumeMode", "Filesystem")
            obj.setdefault("status", {}).setdefault("phase", "Pending")
        elif resource.plural == "daemonsets":
            spec.setdefault("revisionHistoryLimit", 10)
            spec.setdefault("updateStrategy", {"type": "RollingUpdate",
                                               "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}})

    def _check_claim_update(self, resource: Resource, old: dict[str, Any], new: dict[str, Any]) -> None:
        """A claim's spec is immutable but for a larger storage request, and that only where its
        StorageClass allows expansion (validation, then the PersistentVolumeClaimResize admission)."""
        name = old["metadata"]["name"]

        def storage(obj: dict[str, Any]) -> float:
            return quantity(str(((obj["spec"].get("resources") or {}).get("requests") or {}).get("storage", "0")))

        def without_requests(spec: dict[str, Any]) -> dict[str, Any]:
            rest = copy.deepcopy(spec)
            (rest.get("resources") or {}).pop("requests", None)
            return rest
        if without_requests(old["spec"]) != without_requests(new["spec"]):
            raise invalid(resource, name, "spec", "Forbidden: spec is immutable after creation except "
                          "resources.requests and volumeAttributesClassName for bound claims", "FieldValueForbidden")
        before, after = storage(old), storage(new)
        if after < before:
            raise invalid(resource, name, "spec.resources.requests.storage",
                          "Forbidden: field can not be less than status.capacity", "FieldValueForbidden")
        if after > before and new["spec"].get("storageClassName") not in self.expandable_storage_classes:
            raise ApiError(403, f'{resource.qualified} "{name}" is forbidden: only dynamically provisioned pvc '
                           "can be resized and the storageclass that provisions the pvc must support resize",
                           details={"name": name, "kind": resource.plural})

    def _render_managers(self, key: Key, obj: dict[str, Any]) -> None:
        entries = []
        for (manager, _), entry in self.owners.get(key, {}).items():
            if not entry.paths:
                continue
            entries.append({"manager": manager, "operation": entry.operation, "apiVersion": entry.api_version,
                            "time": entry.time, "fieldsType": "FieldsV1", "fieldsV1": fields_v1(entry.paths)})
        if entries:
            obj["metadata"]["managedFields"] = entries
        else:
            obj["metadata"].pop("managedFields", None)

    def _spec_of(self, obj: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}

    def _commit(self, resource: Resource, key: Key, new: dict[str, Any], old: dict[str, Any] | None,
                owners: dict[OwnerKey, Manager] | None, dry_run: bool) -> dict[str, Any]:
        """Store `new` (or not, with dryRun) unless it equals what is stored: no-op writes keep
        the resourceVersion and send no watch event, as the real API."""
        new["apiVersion"], new["kind"] = resource.api_version, resource.kind
        self._defaults(resource, new)
        if old is not None and resource.plural == "persistentvolumeclaims":
            self._check_claim_update(resource, old, new)
        if old is not None:
            for server_field in ("uid", "creationTimestamp", "generation", "resourceVersion",
                                 "deletionTimestamp"):
                if server_field in old["metadata"]:
                    new["metadata"][server_field] = old["metadata"][server_field]
                else:
                    new["metadata"].pop(server_field, None)
            if resource.generation and self._spec_of(new) != self._spec_of(old):
                new["metadata"]["generation"] = old["metadata"].get("generation", 1) + 1
        if owners is not None and not dry_run:
            saved_owners = self.owners.get(key)
            self.owners[key] = owners
            self._render_managers(key, new)
            if saved_owners is not None and old is not None:
                # compare without the managers' timestamps: a no-op apply changes nothing
                def strip(o: dict[str, Any]) -> dict[str, Any]:
                    c = copy.deepcopy(o)
                    for m in c["metadata"].get("managedFields", []):
                        m.pop("time", None)
                    return c
                if strip(new) == strip(old):
                    self.owners[key] = saved_owners
                    return copy.deepcopy(old)
        elif old is not None:
            new["metadata"]["managedFields"] = copy.deepcopy(old["metadata"].get("managedFields", []))
            if not new["metadata"]["managedFields"]:
                new["metadata"].pop("managedFields")
        if old is not None and new == old:
            return copy.deepcopy(old)
        if old is None:
            new["metadata"].update({"uid": str(uuid.uuid4()), "creationTimestamp": now_rfc3339()})
            if resource.generation:
                new["metadata"]["generation"] = 1
        if dry_run:
            return new
        rv = self._bump()
        new["metadata"]["resourceVersion"] = str(rv)
        self.objects[key] = new
        self._emit(Event(rv, "ADDED" if old is None else "MODIFIED", resource, copy.deepcopy(new),
                         copy.deepcopy(old) if old is not None else None))
        return copy.deepcopy(new)

    @staticmethod
    def _with_update(owners: dict[OwnerKey, Manager], manager: str, api_version: str, changed: set[Path]
                     ) -> dict[OwnerKey, Manager]:
        """An Update by `manager` takes over the fields it changed from every other entry."""
        result = {k: Manager(e.operation, e.api_version, e.time, set(e.paths) - changed)
                  for k, e in owners.items()}
        if changed:
            entry = result.setdefault((manager, "Update"), Manager("Update", api_version, now_rfc3339()))
            entry.paths |= changed
            entry.time = now_rfc3339()
        return {k: e for k, e in result.items() if e.paths}

    @staticmethod
    def _written_managers(old: dict[str, Any], written: Any) -> dict[OwnerKey, Manager] | None:
        """managedFields a client writes itself replace the server's record (kubectl does so when
        it moves client-side apply's fields to server-side apply); unchanged or empty: None."""
        if not isinstance(written, list) or not written or written == old["metadata"].get("managedFields"):
            return None
        owners: dict[OwnerKey, Manager] = {}
        for entry in written:
            if isinstance(entry, dict) and entry.get("manager") and entry.get("operation") in ("Apply", "Update"):
                owners[(entry["manager"], entry["operation"])] = Manager(
                    entry["operation"], entry.get("apiVersion", ""), entry.get("time") or now_rfc3339(),
                    parse_fields_v1(entry.get("fieldsV1")))
        return owners

    @staticmethod
    def _changed_paths(old: dict[str, Any] | None, new: dict[str, Any]) -> set[Path]:
        from support.kubeapi_merge import get_path
        new_paths = owned_paths(new)
        if old is None:
            return new_paths
        return {p for p in new_paths if get_path(old, p) != get_path(new, p)}

    def create(self, resource: Resource, namespace: str | None, body: dict[str, Any], manager: str,
               dry_run: bool = False) -> dict[str, Any]:
        with self.lock:
            body = copy.deepcopy(body)
            meta = body.setdefault("metadata", {}) if isinstance(body, dict) else {}
            if isinstance(meta, dict) and not meta.get("name") and meta.get("generateName"):
                meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
            name = self._validate_identity(resource, namespace, body, None)
            key = (resource, namespace or "" if resource.namespaced else "", name)
            self._check_namespace(resource, namespace, name)
            if key in self.objects:
                raise already_exists(resource, name)
            body["metadata"]["name"] = name
            if resource.namespaced:
                body["metadata"]["namespace"] = namespace
            else:
                body["metadata"].pop("namespace", None)
            if "status" in resource.subresources:
                body.pop("status", None)
            for server_field in ("uid", "resourceVersion", "generation", "creationTimestamp", "managedFields"):
                body["metadata"].pop(server_field, None)
            owners = self._with_update({}, manager, resource.api_version, owned_paths(body))
            return self._commit(resource, key, body, None, owners, dry_run)

    def replace(self, resource: Resource, namespace: str | None, name: str, body: dict[str, Any], manager: str,
                dry_run: bool = False, subresource: str | None = None) -> dict[str, Any]:
        with self.lock:
            body = copy.deepcopy(body)
            self._validate_identity(resource, namespace, body, name)
            key = (resource, namespace or "" if resource.namespaced else "", name)
            old = self.objects.get(key)
            if old is None:
                raise not_found(resource, name)
            want_rv = (body.get("metadata") or {}).get("resourceVersion")
            if want_rv and want_rv != old["metadata"]["resourceVersion"]:
                raise modified_conflict(resource, name)
            if subresource == "status":
                new = copy.deepcopy(old)
                new["status"] = body.get("status") or {}
                return self._commit(resource, key, new, old, None, dry_run)
            new = body
            new.setdefault("metadata", {})["name"] = name
            if resource.namespaced:
                new["metadata"]["namespace"] = namespace
            if "status" in resource.subresources:
                new["status"] = copy.deepcopy(old.get("status")) if "status" in old else {}
                if not new["status"]:
                    new.pop("status")
            owners = self._written_managers(old, new.get("metadata", {}).pop("managedFields", None)) or \
                self._with_update(self.owners.get(key, {}), manager, resource.api_version,
                                  self._changed_paths(old, new))
            return self._commit(resource, key, new, old, owners, dry_run)

    def patch(self, resource: Resource, namespace: str | None, name: str, patch_type: str, patch: Any,
              manager: str | None, force: bool = False, dry_run: bool = False,
              subresource: str | None = None) -> tuple[dict[str, Any], bool]:
        """A PATCH of any supported type; returns (object, created) — only apply creates."""
        with self.lock:
            key = (resource, namespace or "" if resource.namespaced else "", name)
            old = self.objects.get(key)
            if patch_type == "apply":
                return self._apply(resource, key, namespace, name, patch, manager, force, dry_run, old,
                                   subresource)
            if old is None:
                raise not_found(resource, name)
            if not isinstance(patch, list if patch_type == "json" else dict):
                raise ApiError(400, "the body of the request was in an unknown format: a "
                               f"{'JSON patch must be a list' if patch_type == 'json' else 'patch must be an object'}")
            try:
                merged = {"merge": merge_patch, "json": json_patch,
                          "strategic": strategic_merge_patch}[patch_type](old, patch)
            except PatchError as error:
                raise ApiError(422 if patch_type != "json" else 422, str(error)) from None
            if not isinstance(merged, dict) or not isinstance(merged.get("metadata"), dict):
                raise ApiError(422, "the patch leaves no object with metadata")
            want_rv = merged["metadata"].get("resourceVersion")
            if want_rv and want_rv != old["metadata"]["resourceVersion"]:
                raise modified_conflict(resource, name)
            if merged.get("metadata", {}).get("name") != name:
                raise ApiError(400, f"the name of the object ({merged.get('metadata', {}).get('name')}) does "
                               f"not match the name on the URL ({name})")
            if subresource == "status":
                new = copy.deepcopy(old)
                new["status"] = merged.get("status") or {}
                return self._commit(resource, key, new, old, None, dry_run), False
            if "status" in resource.subresources:
                if "status" in old:
                    merged["status"] = copy.deepcopy(old["status"])
                else:
                    merged.pop("status", None)
            owners = self._written_managers(old, merged["metadata"].pop("managedFields", None)) or \
                self._with_update(self.owners.get(key, {}), manager or "unknown", resource.api_version,
                                  self._changed_paths(old, merged))
            return self._commit(resource, key, merged, old, owners, dry_run), False

    def _apply(self, resource: Resource, key: Key, namespace: str | None, name: str, applied: Any,
               manager: str | None, force: bool, dry_run: bool, old: dict[str, Any] | None,
               subresource: str | None) -> tuple[dict[str, Any], bool]:
        if not isinstance(applied, dict):
            raise ApiError(400, "the body of the request was in an unknown format: apply needs an object")
        if not manager:
            raise invalid(resource, name, "metadata.managedFields.fieldManager",
                          "Required value: is required for apply patch", "FieldValueRequired")
        if not applied.get("apiVersion") or not applied.get("kind"):
            raise ApiError(400, "invalid object type: apply patches need apiVersion and kind")
        self._validate_identity(resource, namespace, applied, name)
        if subresource:
            raise ApiError(405, "the double applies to main resources only")
        if old is None:
            self._check_namespace(resource, namespace, name)
            body = apply_fields({"metadata": {"name": name}}, applied, set(), set())
            body["metadata"]["name"] = name
            if resource.namespaced:
                body["metadata"]["namespace"] = namespace
            owners = {(manager, "Apply"): Manager("Apply", resource.api_version, now_rfc3339(),
                                                  owned_paths(applied))}
            return self._commit(resource, key, body, None, owners, dry_run), True
        current_owners = self.owners.get(key, {})
        mine = (manager, "Apply")
        others: dict[str, set[Path]] = {}
        for (other, _), entry in current_owners.items():
            if other != manager:
                others.setdefault(other, set()).update(entry.paths)
        found = conflicts(old, applied, others)
        if found and not force:
            lines = "\n".join(f"- {render_path(path)}" for _, path in found)
            by = sorted({m for m, _ in found})
            plural = "s" * (len(found) > 1)
            raise ApiError(409, f"Apply failed with {len(found)} conflict{plural}: conflict{plural} with "
                           f"{', '.join(repr(m) for m in by)} using {resource.api_version}:\n{lines}",
                           "Conflict",
                           details={"name": name, "group": resource.group, "kind": resource.plural,
                                    "causes": [{"reason": "FieldManagerConflict", "field": render_path(p),
                                                "message": f'conflict with "{m}" using {resource.api_version}'}
                                               for m, p in found]})
        taken = {p for _, p in found}
        owners = {k: Manager(e.operation, e.api_version, e.time, set(e.paths) - taken)
                  for k, e in current_owners.items() if k != mine}
        owners = {k: e for k, e in owners.items() if e.paths}
        previously = current_owners[mine].paths if mine in current_owners else set()
        others_paths: set[Path] = set().union(*(e.paths for e in owners.values())) if owners else set()
        new = apply_fields(old, applied, previously, others_paths)
        if "status" in old:
            new["status"] = copy.deepcopy(old["status"])
        new["metadata"].pop("managedFields", None)
        now_paths = owned_paths(applied)
        entry = Manager("Apply", resource.api_version, now_rfc3339(), now_paths)
        if mine in current_owners and current_owners[mine].paths == now_paths:
            entry.time = current_owners[mine].time
        owners[mine] = entry
        return self._commit(resource, key, new, old, owners, dry_run), False

    def delete(self, resource: Resource, namespace: str | None, name: str, propagation: str = "Background",
               dry_run: bool = False) -> dict[str, Any]:
        """Returns the object as it is left: a namespace starts Terminating, the rest is gone."""
        with self.lock:
            key = (resource, namespace or "" if resource.namespaced else "", name)
            old = self.objects.get(key)
            if old is None:
                raise not_found(resource, name)
            if resource.plural == "namespaces":
                if (old.get("status") or {}).get("phase") == "Terminating":
                    raise ApiError(409, f'Operation cannot be fulfilled on namespaces "{name}": The system is '
                                   "ensuring all content is removed from this namespace.  Upon completion, "
                                   "this namespace will automatically be purged by the system.",
                                   details={"name": name, "group": "", "kind": "namespaces"})
                if dry_run:
                    return copy.deepcopy(old)
                new = copy.deepcopy(old)
                new["metadata"]["deletionTimestamp"] = now_rfc3339()
                new["status"] = {**(new.get("status") or {}), "phase": "Terminating"}
                result = self._commit(resource, key, new, old, None, False)
                timer = threading.Timer(self.namespace_finalize_delay, self._finalize_namespace, (name,))
                timer.daemon = True
                timer.start()
                return result
            if dry_run:
                return copy.deepcopy(old)
            self._remove(key)
            if propagation != "Orphan":
                self._collect_garbage(old["metadata"]["uid"])
            return old

    def _remove(self, key: Key) -> None:
        old = self.objects.pop(key)
        self.owners.pop(key, None)
        rv = self._bump()
        gone = copy.deepcopy(old)
        gone["metadata"]["resourceVersion"] = str(rv)
        self._emit(Event(rv, "DELETED", key[0], gone, old))

    def _collect_garbage(self, owner_uid: str) -> None:
        """The garbage collector: dependents of a deleted owner go too (background propagation)."""
        dependents = [key for key, obj in self.objects.items()
                      if any(ref.get("uid") == owner_uid for ref in obj["metadata"].get("ownerReferences") or [])]
        for key in dependents:
            if key in self.objects:
                uid = self.objects[key]["metadata"]["uid"]
                self._remove(key)
                self._collect_garbage(uid)

    def _finalize_namespace(self, name: str) -> None:
        """The namespace controller: delete everything in it, then the namespace itself."""
        with self.lock:
            for key in [k for k in self.objects if k[0].namespaced and k[1] == name]:
                if key in self.objects:
                    self._remove(key)
            for key in [k for k in self.objects if k[0].plural == "namespaces" and k[2] == name]:
                self._remove(key)

    def compact(self) -> int:
        """Forget the event log, as etcd compaction does; returns the compacted revision."""
        with self.lock:
            self.events.clear()
            self.compacted = self.revision
            return self.compacted
