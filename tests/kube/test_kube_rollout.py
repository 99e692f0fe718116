"""What the CLI reads from pod and workload status while it waits (pure functions, pod objects as
the API returns them)."""

from __future__ import annotations

from typing import Any

import pytest

from shark.kube.rollout import PodState, RolloutFailed, assess, pod_state, wait_rollout
from shark.kube.view import LineView, rows


def pod(name: str = "shark-worker-x", node: str | None = "node-a", *, ready: bool = False,
        phase: str = "Running", waiting: dict[str, Any] | None = None, scheduled: dict[str, Any] | None = None,
        last: dict[str, Any] | None = None, created: str = "2025-01-01T00:00:00Z", restarts: int = 0,
        deleting: bool = False) -> dict[str, Any]:
    containers = [{"name": "worker", "ready": ready, "restartCount": restarts,
                   "state": {"waiting": waiting} if waiting else {"running": {}},
                   **({"lastState": {"terminated": last}} if last else {})}]
    conditions = [{"type": "Ready", "status": "True" if ready else "False"}]
    if scheduled:
        conditions.append({"type": "PodScheduled", **scheduled})
        containers = []
    return {"metadata": {"name": name, "creationTimestamp": created,
                         **({"deletionTimestamp": created} if deleting else {})},
            "spec": {"nodeName": node, "containers": [{"name": "worker", "image": "kubectl-shark:0.1.0"}]},
            "status": {"phase": phase, "conditions": conditions, "containerStatuses": containers}}


@pytest.mark.parametrize(("obj", "reason", "fatal", "message"), [
    (pod(ready=True), "ready", False, ""),
    (pod(), "not ready", False, "the readiness probe has not passed"),
    (pod(phase="Pending", waiting={"reason": "ContainerCreating"}), "ContainerCreating", False, ""),
    (pod(phase="Pending", waiting={"reason": "ImagePullBackOff", "message": 'Back-off pulling image "x:1"'}),
     "ImagePullBackOff", True, 'Back-off pulling image "x:1"'),
    (pod(phase="Pending", waiting={"reason": "ErrImagePull", "message": "not found"}), "ErrImagePull", False,
     "not found"),
    (pod(waiting={"reason": "CrashLoopBackOff", "message": "back-off 40s"}, restarts=4,
         last={"exitCode": 1, "reason": "Error"}), "CrashLoopBackOff", True, "exited 1 (Error), restarted 4 times"),
    (pod(node=None, phase="Pending", scheduled={"status": "False", "reason": "Unschedulable",
                                                "message": "0/3 nodes are available"}),
     "Unschedulable", False, "0/3 nodes are available"),
    (pod(ready=True, deleting=True), "Terminating", False, ""),
])
def test_pod_state_names_the_most_telling_reason(obj, reason, fatal, message):
    state = pod_state(obj)
    assert (state.reason, state.fatal, state.message) == (reason, fatal, message)
    assert state.ready == (reason == "ready")


def node(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name}}


def daemonset(desired: int, ready: int, updated: int | None = None, generation: int = 1,
              observed: int = 1) -> dict[str, Any]:
    return {"metadata": {"generation": generation},
            "status": {"desiredNumberScheduled": desired, "numberReady": ready,
                       "updatedNumberScheduled": desired if updated is None else updated,
                       "observedGeneration": observed}}


def deployment(ready: int = 1, generation: int = 1, observed: int = 1) -> dict[str, Any]:
    return {"metadata": {"generation": generation}, "spec": {"replicas": 1},
            "status": {"replicas": 1, "updatedReplicas": 1, "readyReplicas": ready, "observedGeneration": observed}}


HUB = [pod("shark-hub-1", node="node-a", ready=True)]


def test_done_when_the_hub_and_every_node_are_ready():
    workers = [pod("w-a", "node-a", ready=True), pod("w-b", "node-b", ready=True)]
    state = assess([node("node-a"), node("node-b")], deployment(), daemonset(2, 2), HUB, workers)
    assert state.done and state.not_ready() == []


def test_not_done_while_the_controller_has_not_seen_the_new_spec():
    workers = [pod("w-a", "node-a", ready=True)]
    state = assess([node("node-a")], deployment(), daemonset(1, 1, generation=2, observed=1), HUB, workers)
    assert not state.done and state.hub_done and not state.workers_done


def test_a_node_without_its_worker_and_a_replaced_pod_show_the_newest():
    workers = [pod("w-old", "node-a", ready=True, created="2025-01-01T00:00:00Z"),
               pod("w-new", "node-a", waiting={"reason": "ContainerCreating"}, phase="Pending",
                   created="2025-01-01T00:01:00Z")]
    state = assess([node("node-a"), node("node-b")], deployment(), daemonset(2, 1, updated=1), HUB, workers)
    assert state.workers["node-a"].name == "w-new" and state.workers["node-b"] is None
    assert state.not_ready() == ["worker w-new on node-a: ContainerCreating", "worker on node-b: no pod yet"]


def test_a_partial_rollout_names_the_workers_still_on_the_previous_version():
    def generation(obj: dict[str, Any], made_from: int) -> dict[str, Any]:
        obj["metadata"]["labels"] = {"pod-template-generation": str(made_from)}
        return obj
    workers = [generation(pod("w-a", "node-a", ready=True), 2), generation(pod("w-b", "node-b"), 2),
               generation(pod("w-c", "node-c", ready=True), 1)]
    rolling = daemonset(3, 2, updated=2, generation=2, observed=2)
    rolling["spec"] = {"updateStrategy": {"rollingUpdate": {"maxUnavailable": "34%"}}}
    state = assess([node("node-a"), node("node-b"), node("node-c")], deployment(), rolling, HUB, workers)
    assert not state.done and [p.name for p in state.outdated()] == ["w-c"]
    assert state.workers["node-c"].describe() == "ready, previous version"
    assert state.not_ready() == [
        "worker w-b on node-b: not ready: the readiness probe has not passed",
        "worker w-c on node-c: still the previous version, waiting to be replaced (the DaemonSet replaces "
        "workers with at most 34% nodes unavailable at a time)"]
    # once the controller reports every node updated, an old label alone does not mark a pod
    done = assess([node("node-c")], deployment(), daemonset(1, 1, generation=2, observed=2), HUB, [workers[2]])
    assert done.done and done.outdated() == []


def test_missing_objects_are_named():
    state = assess([node("node-a")], None, None, [], [])
    assert not state.done and state.missing == ["Deployment shark-hub", "DaemonSet shark-worker"]


def test_the_line_view_prints_only_changes():
    lines: list[str] = []
    view = LineView(lines.append)
    waiting = assess([node("node-a")], deployment(0), daemonset(1, 0), [pod("shark-hub-1", phase="Pending",
                                                                          waiting={"reason": "ContainerCreating"})],
                     [pod("w-a", "node-a")])
    view(waiting)
    view(waiting)
    assert len(lines) == 2 and "ContainerCreating" in lines[0] and "not ready" in lines[1]
    view(assess([node("node-a")], deployment(), daemonset(1, 1), HUB, [pod("w-a", "node-a", ready=True)]))
    assert len(lines) == 4 and lines[-1].split()[-1] == "ready"
    assert [r[0] for r in rows(waiting)] == ["hub", "node-a"]


class Snapshots:
    """A cluster whose lists answer from a script of states, one per poll."""

    def __init__(self, states: list[tuple]) -> None:
        self.states = states
        self.polls = 0

    def list(self, kind, namespace=None, labels=None):
        nodes, _, _, hub, workers = self.states[min(self.polls, len(self.states) - 1)]
        if kind.kind == "Node":
            return nodes
        return hub if "hub" in (labels or "") else workers

    def get(self, kind, name, namespace=None):
        _, deploy, ds, _, _ = self.states[min(self.polls, len(self.states) - 1)]
        if kind.kind == "DaemonSet":
            self.polls += 1      # the last call of a snapshot
            return ds
        return deploy


def test_wait_fails_fast_on_an_image_that_cannot_be_pulled():
    backoff = pod("w-a", "node-a", phase="Pending",
                  waiting={"reason": "ImagePullBackOff", "message": 'Back-off pulling image "nope:1"'})
    cluster = Snapshots([([node("node-a")], deployment(), daemonset(1, 0), HUB, [backoff])])
    seen: list = []
    with pytest.raises(RolloutFailed) as failed:
        wait_rollout(cluster, "shark", 300, seen.append, image="nope:1", sleep=lambda s: None)
    assert failed.value.message == 'pod w-a on node-a cannot start: ImagePullBackOff: Back-off pulling image "nope:1"'
    assert "nope:1" in failed.value.hint and "--image" in failed.value.hint
    assert cluster.polls == 1 and len(seen) == 1


def test_wait_times_out_listing_each_pod_not_ready():
    clock = iter(range(0, 1000, 5))
    cluster = Snapshots([([node("node-a")], deployment(), daemonset(1, 0), HUB, [pod("w-a", "node-a")])])
    with pytest.raises(RolloutFailed) as failed:
        wait_rollout(cluster, "shark", 12, lambda s: None, clock=lambda: next(clock), sleep=lambda s: None)
    assert failed.value.message == "the rollout did not finish within 12s: 1 pod not ready"
    assert failed.value.details == ["worker w-a on node-a: not ready: the readiness probe has not passed"]


def test_wait_returns_once_ready():
    pending = pod("w-a", "node-a", phase="Pending", waiting={"reason": "ContainerCreating"})
    cluster = Snapshots([([node("node-a")], deployment(), daemonset(1, 0), HUB, [pending]),
                         ([node("node-a")], deployment(), daemonset(1, 1), HUB, [pod("w-a", "node-a", ready=True)])])
    state = wait_rollout(cluster, "shark", 60, lambda s: None, sleep=lambda s: None)
    assert state.done and cluster.polls == 2
    assert isinstance(state.workers["node-a"], PodState)
