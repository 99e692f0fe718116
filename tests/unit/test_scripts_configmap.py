"""Scripts kept in a ConfigMap (hub --kube), against the Kubernetes API double: round trip,
a concurrent change retried (never lost), the size limit, what cannot be read is skipped."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client as kclient, config as kconfig

from hub.scripts.model import StoredScript
from hub.scripts.store import ConfigMapScriptStore, StoreError
from support.kubeapi import KubeAPI


@pytest.fixture
def kube(tmp_path: Path) -> Iterator[tuple[KubeAPI, kclient.ApiClient]]:
    with KubeAPI() as api:
        api.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shark"}})
        configuration = kclient.Configuration()
        kconfig.load_kube_config(config_file=str(api.write_kubeconfig(tmp_path / "kubeconfig")),
                                 client_configuration=configuration, persist_config=False)
        with kclient.ApiClient(configuration) as client:
            yield api, client


def script(name: str, code: str = "var a = 1;") -> StoredScript:
    return StoredScript(name=name, code=code, created=1.0, updated=2.0)


def test_round_trip_in_one_configmap(kube: tuple[KubeAPI, kclient.ApiClient]) -> None:
    api, client = kube
    store = ConfigMapScriptStore(client, "shark")

    async def run() -> None:
        assert await store.load_all() == []                      # no ConfigMap yet
        await store.put(script("tag-5xx", "function onItemCaptured(e) {}"))
        await store.put(script("beat"))
        await store.put(script("beat", "var b = 2;"))
        assert [s.name for s in await store.load_all()] == ["beat", "tag-5xx"]
        assert {s.name: s.code for s in await store.load_all()}["beat"] == "var b = 2;"
        assert await store.delete("beat") is True and await store.delete("beat") is False
    asyncio.run(run())
    configmap = api.get("ConfigMap", "shark-scripts", "shark")
    assert sorted(configmap["data"]) == ["tag-5xx.json"]
    assert json.loads(configmap["data"]["tag-5xx.json"])["code"] == "function onItemCaptured(e) {}"
    assert configmap["metadata"]["labels"]["app.kubernetes.io/component"] == "hub"
    assert store.description == "ConfigMap shark/shark-scripts"


def test_a_concurrent_change_is_retried_not_lost(kube: tuple[KubeAPI, kclient.ApiClient]) -> None:
    api, client = kube
    store = ConfigMapScriptStore(client, "shark")
    asyncio.run(store.put(script("first")))
    read = store._read
    changed = []

    def stale_read():  # noqa: ANN202 - the object as it was; then someone else writes
        current = read()
        if not changed:
            changed.append(True)
            other = ConfigMapScriptStore(client, "shark")
            asyncio.run(other.put(script("meanwhile")))
        return current
    store._read = stale_read  # type: ignore[method-assign]
    asyncio.run(store.put(script("second")))
    assert sorted(api.get("ConfigMap", "shark-scripts", "shark")["data"]) == ["first.json", "meanwhile.json",
                                                                             "second.json"]
    assert [r.status for r in api.requests if r.method == "PUT"].count(409) == 1


def test_limits_and_unreadable_keys(kube: tuple[KubeAPI, kclient.ApiClient]) -> None:
    api, client = kube
    store = ConfigMapScriptStore(client, "shark")
    with pytest.raises(StoreError, match="a ConfigMap holds at most"):
        asyncio.run(store.put(script("huge", "x" * (1024 * 1024))))
    api.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "shark-scripts", "namespace": "shark"},
                "data": {"broken.json": "{nope", "good.json": json.dumps({"name": "good", "code": "var a;",
                                                                           "created": 1, "updated": 1})}})
    assert [s.name for s in asyncio.run(store.load_all())] == ["good"]
    assert "broken.json" in api.get("ConfigMap", "shark-scripts", "shark")["data"]   # left as it was
    api.forbid("get", "configmaps")
    with pytest.raises(StoreError, match="cannot read it: 403"):
        asyncio.run(store.load_all())
