"""Patch and apply semantics of the Kubernetes API double (tests/support/kubeapi.py).

Pure functions over JSON-like dicts, no I/O:
- field sets for server-side apply: every leaf path of an object, the way managedFields records
  ownership (https://kubernetes.io/docs/reference/using-api/server-side-apply/#merge-strategy):
  the associative lists of the built-in types (x-kubernetes-list-type: map) are followed item by
  item, each item named by its keys as FieldsV1 names it (`k:{"name":"hub"}`) — containers,
  initContainers, volumes and imagePullSecrets by name, env by name, a container's ports by
  containerPort+protocol, a Service's by port+protocol, volumeMounts by mountPath; every other
  list (args, tolerations, set lists such as finalizers too) is atomic, a leaf;
- `apply_fields`: what a server-side apply by one manager does to an object (associative lists
  merged per key: other managers' items stay; an item a manager stops applying goes unless
  another manager owns fields of it);
- `merge_patch`: RFC 7386 (application/merge-patch+json);
- `strategic_merge_patch`: application/strategic-merge-patch+json for the lists kubectl
  patches (containers, env, ports, volumes, ...) with the directives kubectl sends
  ($patch, $setElementOrder, $retainKeys, $deleteFromPrimitiveList).
"""

from __future__ import annotations

import copy
import json
from typing import Any

Path = tuple[str, ...]

# Fields the server owns: never part of what a manager applies or owns.
SERVER_METADATA = ("uid", "resourceVersion", "generation", "creationTimestamp", "managedFields",
                   "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink", "name", "namespace")


KEY_DEFAULTS = {"protocol": "TCP"}     # a key field the API defaults is part of the item's key


def list_keys(path: Path, items: Any) -> tuple[str, ...] | None:
    """x-kubernetes-list-map-keys of the list at `path`, or None: an atomic list."""
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items) or len(path) < 2:
        return None
    field, parent = path[-1], path[-2]
    in_container = parent.startswith("k:") and len(path) >= 3 and path[-3] in CONTAINER_LISTS
    if field in CONTAINER_LISTS or field in ("volumes", "imagePullSecrets"):
        return ("name",) if parent == "spec" else None
    if field == "env" and in_container:
        return ("name",)
    if field == "volumeMounts" and in_container:
        return ("mountPath",)
    if field == "ports" and in_container:
        return ("containerPort", "protocol")
    if field == "ports" and path == ("spec", "ports"):     # a Service's
        return ("port", "protocol")
    return None


CONTAINER_LISTS = ("containers", "initContainers", "ephemeralContainers")


def item_key(keys: tuple[str, ...], item: dict[str, Any]) -> str:
    """How FieldsV1 names a list item: k:{"containerPort":8899,"protocol":"TCP"}."""
    return "k:" + json.dumps({k: item.get(k, KEY_DEFAULTS.get(k)) for k in keys}, separators=(",", ":"))


def leaf_paths(obj: Any, prefix: Path = ()) -> set[Path]:
    """Every leaf of a nested dict, through associative lists item by item; an atomic list,
    a scalar and an empty dict are leaves."""
    if isinstance(obj, dict) and obj:
        paths: set[Path] = set()
        for key, value in obj.items():
            path = (*prefix, key)
            keys = list_keys(path, value)
            if keys and value:
                for item in value:
                    paths |= leaf_paths(item, (*path, item_key(keys, item))) or {(*path, item_key(keys, item))}
            else:
                paths |= leaf_paths(value, path)
        return paths
    return {prefix} if prefix else set()


def owned_paths(obj: dict[str, Any], with_status: bool = False) -> set[Path]:
    """The fields a manager owns by writing `obj`: all but identity and server-set metadata."""
    body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind")}
    if not with_status:
        body.pop("status", None)
    meta = {k: v for k, v in (body.get("metadata") or {}).items() if k not in SERVER_METADATA}
    if meta:
        body["metadata"] = meta
    else:
        body.pop("metadata", None)
    return leaf_paths(body)


_MISSING = object()


def _find_item(items: Any, element: str) -> int | None:
    """The index of the associative list item `element` (k:{...}) names."""
    if not isinstance(items, list):
        return None
    wanted = json.loads(element[2:])
    for n, item in enumerate(items):
        if isinstance(item, dict) and all(item.get(k, KEY_DEFAULTS.get(k)) == v for k, v in wanted.items()):
            return n
    return None


def get_path(obj: Any, path: Path) -> Any:
    for key in path:
        if key.startswith("k:"):
            at = _find_item(obj, key)
            if at is None:
                return _MISSING
            obj = obj[at]
        elif not isinstance(obj, dict) or key not in obj:
            return _MISSING
        else:
            obj = obj[key]
    return obj


def has_path(obj: Any, path: Path) -> bool:
    return get_path(obj, path) is not _MISSING


def set_path(obj: dict[str, Any], path: Path, value: Any) -> None:
    for key in path[:-1]:
        if not isinstance(obj.get(key), dict):
            obj[key] = {}
        obj = obj[key]
    obj[path[-1]] = copy.deepcopy(value)


def delete_path(obj: dict[str, Any], path: Path, keep: set[Path]) -> None:
    """Remove a leaf, then the maps it leaves empty (unless a manager still owns them); an
    associative list item goes whole once no manager owns a field of it, and its key fields
    stay while it stays."""
    def owned_under(prefix: Path) -> bool:
        return any(p[:len(prefix)] == prefix for p in keep)
    if any(len(p) > len(path) and p[:len(path)] == path for p in keep):
        return      # a field (an empty list applied once) that holds what others still own
    for depth in range(len(path)):                  # the outermost item nobody owns goes whole
        if path[depth].startswith("k:") and not owned_under(path[:depth + 1]):
            items = get_path(obj, path[:depth])
            at = _find_item(items, path[depth])
            if at is not None:
                del items[at]
                if not items and not owned_under(path[:depth]):
                    delete_path(obj, path[:depth], keep)
            return
    if path[-1] in KEY_FIELDS and len(path) > 1 and path[-2].startswith("k:"):
        return
    parents: list[tuple[Any, Any]] = []
    node: Any = obj
    for key in path[:-1]:
        if key.startswith("k:"):
            at = _find_item(node, key)
            if at is None:
                return
            parents.append((node, at))
            node = node[at]
        elif not isinstance(node, dict) or not isinstance(node.get(key), (dict, list)):
            return
        else:
            parents.append((node, key))
            node = node[key]
    if not isinstance(node, dict):
        return
    node.pop(path[-1], None)
    for depth in range(len(parents) - 1, -1, -1):
        parent, key = parents[depth]
        if isinstance(key, int) or parent[key] or path[: depth + 1] in keep:
            break
        del parent[key]


KEY_FIELDS = {"name", "mountPath", "containerPort", "port", "protocol"}


def deep_merge(target: dict[str, Any], source: dict[str, Any], prefix: Path = ()) -> None:
    """Maps merge key by key; associative lists item by item (by their keys; new items are
    appended); anything else (atomic lists included) is replaced."""
    for key, value in source.items():
        path = (*prefix, key)
        keys = list_keys(path, value)
        if isinstance(value, dict) and isinstance(target.get(key), dict):     # {} too: it merges, never clears
            deep_merge(target[key], value, path)
        elif keys and isinstance(target.get(key), list) and list_keys(path, target[key]):
            for item in value:
                element = item_key(keys, item)
                at = _find_item(target[key], element)
                if at is None:
                    target[key].append(copy.deepcopy(item))
                else:
                    deep_merge(target[key][at], item, (*path, element))
        else:
            target[key] = copy.deepcopy(value)


def fields_v1(paths: set[Path]) -> dict[str, Any]:
    """managedFields' FieldsV1 form of a field set: {"f:spec": {"f:replicas": {}}}, list items
    as {"k:{\"name\":\"hub\"}": {".": {}, "f:image": {}}}."""
    tree: dict[str, Any] = {}
    for path in sorted(paths):
        node = tree
        for key in path:
            if key.startswith("k:"):
                node = node.setdefault(key, {})
                node["."] = {}
            else:
                node = node.setdefault(f"f:{key}", {})
    return tree


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: null deletes, maps merge, everything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


class PatchError(ValueError):
    """A patch the server cannot apply (422 Invalid / 400 BadRequest in the real API)."""


# patchMergeKey of the list fields in the built-in types that kubectl's patches touch; lists not
# named here are atomic (replaced whole), as for fields without a patchStrategy.
MERGE_KEYS: dict[str, str] = {
    "containers": "name", "initContainers": "name", "ephemeralContainers": "name",
    "env": "name", "volumes": "name", "volumeMounts": "mountPath", "volumeDevices": "devicePath",
    "imagePullSecrets": "name", "conditions": "type", "ownerReferences": "uid",
    "hostAliases": "ip", "resourceClaims": "name", "topologySpreadConstraints": "topologyKey",
}
# Lists of scalars with patchStrategy merge: entries are added, never replaced.
PRIMITIVE_MERGE_LISTS = {"finalizers"}


def _merge_key(field: str, items: list[Any]) -> str | None:
    if field == "ports":   # containerPort in a container, port in a Service
        sample = next((i for i in items if isinstance(i, dict)), {})
        return "containerPort" if "containerPort" in sample else "port"
    return MERGE_KEYS.get(field)


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    directive = patch.get("$patch")
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if directive == "delete":
        return None
    if directive not in (None, "merge"):
        raise PatchError(f"unknown patch type: {directive!r} in $patch")
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    retain = patch.get("$retainKeys")
    orders = {k.split("/", 1)[1]: v for k, v in patch.items() if k.startswith("$setElementOrder/")}
    removals = {k.split("/", 1)[1]: v for k, v in patch.items()
                if k.startswith("$deleteFromPrimitiveList/")}
    for key, value in patch.items():
        if key.startswith("$"):
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, list):
            result[key] = _patch_list(key, result.get(key), value)
        else:
            merged = strategic_merge_patch(result.get(key), value)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
    for key, values in removals.items():
        if isinstance(result.get(key), list):
            result[key] = [v for v in result[key] if v not in values]
    for key, order in orders.items():
        if isinstance(result.get(key), list):
            result[key] = _reorder(key, result[key], order)
    if isinstance(retain, list):
        for key in [k for k in result if k not in retain]:
            del result[key]
    return result


def _patch_list(field: str, current: Any, patch: list[Any]) -> list[Any]:
    current = current if isinstance(current, list) else []
    if field in PRIMITIVE_MERGE_LISTS:
        return current + [v for v in patch if v not in current]
    merge_key = _merge_key(field, patch + current)
    if merge_key is None or not all(isinstance(i, dict) for i in patch):
        if any(isinstance(i, dict) and "$patch" in i for i in patch):
            raise PatchError(f"{field}: $patch in a list without a merge key")
        return copy.deepcopy(patch)
    if any(isinstance(i, dict) and i.get("$patch") == "replace" for i in patch):
        return [copy.deepcopy(i) for i in patch if i.get("$patch") != "replace"]
    result = copy.deepcopy(current)
    for item in patch:
        if merge_key not in item:
            raise PatchError(f"{field}: an item has no merge key {merge_key!r}")
        at = next((n for n, old in enumerate(result)
                   if isinstance(old, dict) and old.get(merge_key) == item[merge_key]), None)
        if item.get("$patch") == "delete":
            if at is not None:
                del result[at]
            continue
        if at is None:
            result.append({k: copy.deepcopy(v) for k, v in item.items() if k != "$patch"})
        else:
            result[at] = strategic_merge_patch(result[at], item)
    return result


def _reorder(field: str, items: list[Any], order: list[Any]) -> list[Any]:
    merge_key = _merge_key(field, items)
    if merge_key is None:
        return items

    def rank(item: Any) -> int:
        for n, wanted in enumerate(order):
            if isinstance(wanted, dict) and isinstance(item, dict) and \
                    wanted.get(merge_key) == item.get(merge_key):
                return n
        return len(order)
    return sorted(items, key=rank)


def apply_fields(current: dict[str, Any], applied: dict[str, Any], previously_owned: set[Path],
                 owned_by_others: set[Path]) -> dict[str, Any]:
    """Server-side apply by one manager: drop what it applied before and no longer applies
    (unless another manager owns it), then merge what it applies now over the object."""
    result = copy.deepcopy(current)
    now = owned_paths(applied)
    for path in previously_owned - now - owned_by_others:
        delete_path(result, path, keep=now | owned_by_others)
    body = {k: v for k, v in applied.items() if k not in ("status",)}
    meta = {k: v for k, v in (body.pop("metadata", None) or {}).items() if k not in SERVER_METADATA}
    deep_merge(result, body)
    if meta:
        deep_merge(result.setdefault("metadata", {}), meta)
    return result


def render_path(path: Path) -> str:
    """A field path as the API's conflict messages spell it: .spec.containers[name="hub"].image."""
    out = ""
    for key in path:
        if key.startswith("k:"):
            out += "[" + ",".join(f"{k}={json.dumps(v)}" for k, v in json.loads(key[2:]).items()) + "]"
        else:
            out += f".{key}"
    return out


def conflicts(current: dict[str, Any], applied: dict[str, Any],
              owners: dict[str, set[Path]]) -> list[tuple[str, Path]]:
    """(manager, path) of every field another manager owns with a value this apply changes."""
    found = []
    for path in sorted(owned_paths(applied)):
        for manager, paths in owners.items():
            if path in paths and get_path(current, path) != get_path(applied, path):
                found.append((manager, path))
    return found


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"JSON pointer {path!r} does not start with '/'")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _parent(doc: Any, tokens: list[str], op: str) -> tuple[Any, str]:
    node = doc
    for token in tokens[:-1]:
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            raise PatchError(f"{op}: path /{'/'.join(tokens)}: /{token} does not exist")
    return node, tokens[-1]


def json_patch(target: Any, operations: Any) -> Any:
    """RFC 6902 JSON patch (application/json-patch+json): add, remove, replace, move, copy, test."""
    if not isinstance(operations, list):
        raise PatchError("a JSON patch is a list of operations")
    doc = copy.deepcopy(target)
    for n, operation in enumerate(operations):
        if not isinstance(operation, dict) or "op" not in operation or "path" not in operation:
            raise PatchError(f"operation {n}: needs 'op' and 'path'")
        op, tokens = operation["op"], _pointer(operation["path"])
        if op in ("move", "copy"):
            source_parent, source_key = _parent(doc, _pointer(operation.get("from", "")), op)
            value = _get(source_parent, source_key, op)
            if op == "move":
                _remove(source_parent, source_key, op)
            doc = _add(doc, tokens, copy.deepcopy(value), op)
        elif op == "add":
            doc = _add(doc, tokens, copy.deepcopy(operation.get("value")), op)
        elif op in ("remove", "replace", "test"):
            if not tokens:
                raise PatchError(f"{op}: the whole document cannot be a target")
            parent, key = _parent(doc, tokens, op)
            if op == "test":
                if _get(parent, key, op) != operation.get("value"):
                    raise PatchError(f"test failed at {operation['path']}")
            elif op == "remove":
                _remove(parent, key, op)
            else:
                _get(parent, key, op)
                if isinstance(parent, list):
                    parent[int(key)] = copy.deepcopy(operation.get("value"))
                else:
                    parent[key] = copy.deepcopy(operation.get("value"))
        else:
            raise PatchError(f"operation {n}: unknown op {op!r}")
    return doc


def _get(parent: Any, key: str, op: str) -> Any:
    if isinstance(parent, dict) and key in parent:
        return parent[key]
    if isinstance(parent, list) and key.isdigit() and int(key) < len(parent):
        return parent[int(key)]
    raise PatchError(f"{op}: {key!r} does not exist")


def _remove(parent: Any, key: str, op: str) -> None:
    _get(parent, key, op)
    if isinstance(parent, list):
        del parent[int(key)]
    else:
        del parent[key]


def _add(doc: Any, tokens: list[str], value: Any, op: str) -> Any:
    if not tokens:
        return value
    parent, key = _parent(doc, tokens, op)
    if isinstance(parent, list):
        if key == "-":
            parent.append(value)
        elif key.isdigit() and int(key) <= len(parent):
            parent.insert(int(key), value)
        else:
            raise PatchError(f"{op}: index {key!r} is out of range")
    elif isinstance(parent, dict):
        parent[key] = value
    else:
        raise PatchError(f"{op}: the parent of {key!r} is not an object or a list")
    return doc


def parse_fields_v1(tree: Any, prefix: Path = ()) -> set[Path]:
    """A FieldsV1 tree back to field paths; items of associative lists ("k:…") as paths of
    their own; items of set or positional lists ("v:…", "i:…") own their whole list here,
    since the double treats those lists as atomic."""
    if not isinstance(tree, dict):
        return set()
    paths: set[Path] = set()
    for key, sub in tree.items():
        if key == ".":
            continue
        if key.startswith(("v:", "i:")):
            return {prefix} if prefix else set()
        if key.startswith(("f:", "k:")):
            path = (*prefix, key[2:] if key.startswith("f:") else key)
            children = parse_fields_v1(sub, path)
            paths |= children or {path}
    return paths
