"""Where scripts are kept so they survive a restart.

ScriptStore is what the hub needs; FileScriptStore keeps one JSON file per script under the
hub's state dir (local mode), ConfigMapScriptStore one ConfigMap in the hub's namespace (hub
--kube: a pod's files do not outlive it), MemoryScriptStore keeps them for the life of the
process (a hub started with neither).
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Protocol

import anyio
import msgspec

from hub.scripts.model import StoredScript, name_problem

log = logging.getLogger("shark.hub.scripts")


class StoreError(Exception):
    pass


class ScriptStore(Protocol):
    description: str      # where the scripts are, for logs and /status

    async def load_all(self) -> list[StoredScript]: ...

    async def put(self, script: StoredScript) -> None: ...

    async def delete(self, name: str) -> bool: ...


class MemoryScriptStore:
    description = "memory (lost when the hub stops: start it with --state-dir to keep them)"

    def __init__(self) -> None:
        self.scripts: dict[str, StoredScript] = {}

    async def load_all(self) -> list[StoredScript]:
        return sorted(self.scripts.values(), key=lambda s: s.name)

    async def put(self, script: StoredScript) -> None:
        self.scripts[script.name] = script

    async def delete(self, name: str) -> bool:
        return self.scripts.pop(name, None) is not None


class FileScriptStore:
    """<directory>/<name>.json, each written whole to a temporary file and renamed into place,
    so a crash leaves the old version or the new one, never half of one."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.description = str(self.directory)

    def _path(self, name: str) -> Path:
        return self.directory / f"{name}.json"

    async def load_all(self) -> list[StoredScript]:
        return await anyio.to_thread.run_sync(self._load_all)

    def _load_all(self) -> list[StoredScript]:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StoreError(f"cannot create {self.directory}: {error.strerror or error}") from None
        scripts = []
        for path in sorted(self.directory.glob("*.json")):
            try:
                script = msgspec.json.decode(path.read_bytes(), type=StoredScript)
            except (OSError, msgspec.DecodeError, msgspec.ValidationError) as error:
                # Never delete what cannot be read: say so and leave it for a person.
                log.error("scripts: %s cannot be read (%s); left as it is and skipped", path, error)
                continue
            if script.name != path.stem or name_problem(script.name):
                log.error("scripts: %s holds a script named %r; skipped", path, script.name)
                continue
            scripts.append(script)
        return scripts

    async def put(self, script: StoredScript) -> None:
        await anyio.to_thread.run_sync(self._put, script)

    def _put(self, script: StoredScript) -> None:
        data = msgspec.json.format(msgspec.json.encode(script), indent=2) + b"\n"
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd, temporary = tempfile.mkstemp(dir=self.directory, prefix=f".{script.name}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as file:
                    file.write(data)
                    file.flush()
                    os.fsync(file.fileno())
                os.replace(temporary, self._path(script.name))
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
        except OSError as error:
            raise StoreError(f"cannot write {self._path(script.name)}: {error.strerror or error}") from None

    async def delete(self, name: str) -> bool:
        def remove() -> bool:
            try:
                self._path(name).unlink()
            except FileNotFoundError:
                return False
            except OSError as error:
                raise StoreError(f"cannot delete {self._path(name)}: {error.strerror or error}") from None
            return True
        return await anyio.to_thread.run_sync(remove)


CONFIGMAP_NAME = "shark-scripts"
CONFIGMAP_LIMIT = 1024 * 1024 - 4096   # the API refuses objects over 1 MiB; room for metadata
CONFLICT_RETRIES = 5


class ConfigMapScriptStore:
    """One ConfigMap (`shark-scripts` in the hub's namespace), one data key per script
    (<name>.json). Writes read the current object and replace it with its resourceVersion, so a
    concurrent change is a 409 that is retried on the fresh object, never lost."""

    def __init__(self, api_client: object, namespace: str, name: str = CONFIGMAP_NAME) -> None:
        from kubernetes import client as kclient   # only in cluster mode
        self.core = kclient.CoreV1Api(api_client)
        self.kclient = kclient
        self.namespace = namespace
        self.name = name
        self.description = f"ConfigMap {namespace}/{name}"

    def _read(self) -> object | None:
        from kubernetes.client.exceptions import ApiException
        try:
            return self.core.read_namespaced_config_map(self.name, self.namespace)
        except ApiException as error:
            if error.status == 404:
                return None
            raise StoreError(f"{self.description}: cannot read it: {error.status} {error.reason}") from None

    async def load_all(self) -> list[StoredScript]:
        return await anyio.to_thread.run_sync(self._load_all)

    def _load_all(self) -> list[StoredScript]:
        found = self._read()
        scripts = []
        for key, text in sorted(((getattr(found, "data", None) or {}) if found is not None else {}).items()):
            try:
                script = msgspec.json.decode(text, type=StoredScript)
            except (msgspec.DecodeError, msgspec.ValidationError) as error:
                log.error("scripts: key %s of %s cannot be read (%s); left as it is and skipped",
                          key, self.description, error)
                continue
            if f"{script.name}.json" != key or name_problem(script.name):
                log.error("scripts: key %s of %s holds a script named %r; skipped", key, self.description, script.name)
                continue
            scripts.append(script)
        return scripts

    async def put(self, script: StoredScript) -> None:
        text = msgspec.json.encode(script).decode()
        await anyio.to_thread.run_sync(self._change, f"{script.name}.json", text)

    async def delete(self, name: str) -> bool:
        return await anyio.to_thread.run_sync(self._change, f"{name}.json", None)

    def _change(self, key: str, text: str | None) -> bool:
        """Set (text) or remove (None) one key; True when the key was there before."""
        from kubernetes.client.exceptions import ApiException
        for _ in range(CONFLICT_RETRIES):
            current = self._read()
            data = dict((getattr(current, "data", None) or {}) if current is not None else {})
            existed = key in data
            if text is None:
                if not existed:
                    return False
                del data[key]
            else:
                data[key] = text
                size = sum(len(k) + len(v.encode()) for k, v in data.items())
                if size > CONFIGMAP_LIMIT:
                    raise StoreError(f"{self.description}: the scripts would take {size} bytes; a ConfigMap "
                                     f"holds at most {CONFIGMAP_LIMIT}")
            try:
                if current is None:
                    body = self.kclient.V1ConfigMap(
                        metadata=self.kclient.V1ObjectMeta(name=self.name, labels={
                            "app.kubernetes.io/name": "shark", "app.kubernetes.io/component": "hub"}),
                        data=data)
                    self.core.create_namespaced_config_map(self.namespace, body)
                else:
                    current.data = data   # type: ignore[attr-defined]
                    self.core.replace_namespaced_config_map(self.name, self.namespace, current)
                return existed
            except ApiException as error:
                if error.status == 409:   # changed (or created) meanwhile: read again
                    continue
                raise StoreError(f"{self.description}: cannot write it: {error.status} {error.reason}") from None
        raise StoreError(f"{self.description}: it kept changing under {CONFLICT_RETRIES} writes in a row")
