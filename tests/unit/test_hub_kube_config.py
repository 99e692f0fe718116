"""How the hub reaches the API (hub/kube/cluster.py): in a pod, the service account the kubelet
mounts (here moved with SHARK_SERVICE_ACCOUNT_DIR); what it could not load is named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kubernetes import client as kclient
from kubernetes.client.exceptions import ApiException

from hub.kube.cluster import KubeConfigError, KubeSettings, api_client
from support.kubeapi import KubeAPI


def test_in_cluster_the_service_accounts_token_ca_and_namespace_are_used(tmp_path: Path, monkeypatch) -> None:
    with KubeAPI() as kube:
        kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shark"}})
        kube.create({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "shark-hub",
                                                                               "namespace": "shark"}})
        for name, value in kube.write_service_account(tmp_path / "sa", "shark", "shark-hub").items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("SHARK_SERVICE_ACCOUNT_DIR", str(tmp_path / "sa"))
        settings = KubeSettings()
        assert settings.resolved_namespace() == "shark"
        with api_client(settings) as api:
            assert api.configuration.host == kube.url                    # https, verified with ca.crt
            version = kclient.VersionApi(api).get_code()
            assert (version.major, version.minor) == ("1", "32")
            # authenticated as the account, which no RBAC lets read anything yet
            with pytest.raises(ApiException) as refused:
                kclient.CoreV1Api(api).list_namespaced_pod("shark")
        assert refused.value.status == 403
        assert 'User "system:serviceaccount:shark:shark-hub" cannot list resource "pods"' in \
            json.loads(refused.value.body)["message"]
        assert kube.requests[-1].user == "system:serviceaccount:shark:shark-hub"


def test_a_missing_service_account_is_named(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "6443")
    monkeypatch.setenv("SHARK_SERVICE_ACCOUNT_DIR", str(tmp_path / "nothing"))
    with pytest.raises(KubeConfigError) as failed:
        api_client(KubeSettings())
    assert str(failed.value) == (f"cannot load the cluster's configuration (the service account in "
                                 f"{tmp_path / 'nothing'}): Service token file does not exist.")
