"""The cluster-facing click commands and options; thin over shark.kube.runner.

`open`, `clean` and `logs` live here and are added to the CLI group in shark/cli.py; `tap`
(without --local) and `status --cluster` call `tap_cluster` and `status_cluster`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from shark.auth import is_loopback
from shark.kube.render import DeployOptions, OptionError
from shark.kube.resources import DEFAULT_RELEASE_NAMESPACE
from shark.redaction import Redaction

if TYPE_CHECKING:     # the kubernetes client loads only for cluster commands: hub-facing ones start faster
    from shark.kube.runner import ClusterRunner

DEFAULT_TIMEOUT_S = 300.0


def _say(message: str) -> None:
    click.echo(message, err=True)


def _out(message: str) -> None:
    click.echo(message)


def cluster_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """--kubeconfig, --context and -s/--release-namespace, as kubectl spells the first two."""
    for option in reversed([
        click.option("--kubeconfig", metavar="FILE",
                     help="The kubeconfig [default: $KUBECONFIG, else ~/.kube/config]."),
        click.option("--context", metavar="NAME", help="The kubeconfig context [default: its current one]."),
        click.option("-s", "--release-namespace", default=DEFAULT_RELEASE_NAMESPACE, show_default=True,
                     metavar="NS", help="The namespace kubectl-shark is deployed in."),
    ]):
        command = option(command)
    return command


timeout_option = click.option("--timeout", type=click.FloatRange(1, 86_400), default=DEFAULT_TIMEOUT_S,
                              show_default=True, metavar="SECONDS",
                              help="How long to wait for the hub and the workers to be ready.")


def make_runner(kubeconfig: str | None, context: str | None, release_namespace: str) -> ClusterRunner:
    from shark.kube.runner import Access, ClusterRunner
    return ClusterRunner(Access(kubeconfig or None, context, release_namespace), _say, _out)


# tests replace this to inject a forwarder, a browser and a stop event
runner_factory: Callable[[str | None, str | None, str], ClusterRunner] = make_runner


def _proxy(host: str, port: int, open_browser: bool) -> Any:
    from shark.kube.runner import Proxy
    return Proxy(host, port, open_browser)


def _deploy_options(release_namespace: str, image: str | None, image_pull_policy: str, storage_limit: str,
                    pod_regex: str | None, target_namespaces: tuple[str, ...], tls: bool,
                    tolerate_control_plane: bool, tolerations: tuple[str, ...], proxy_host: str,
                    redaction: Redaction = Redaction(), hub_storage: str | None = None,
                    hub_storage_class: str | None = None, dissect_memory: str | None = None
                    ) -> DeployOptions:
    # the browser asks the hub for the name it was given: loopback names are served anyway
    hosts = () if is_loopback(proxy_host) or proxy_host in ("0.0.0.0", "::") else (proxy_host,)
    options = DeployOptions(release_namespace=release_namespace, image=image, image_pull_policy=image_pull_policy,
                            storage_limit=storage_limit, pod_regex=pod_regex or None,
                            target_namespaces=target_namespaces, tls=tls,
                            tolerate_control_plane=tolerate_control_plane, tolerations=tolerations,
                            allowed_hosts=hosts, redaction=redaction, hub_storage=hub_storage,
                            hub_storage_class=hub_storage_class, dissect_memory=dissect_memory)
    try:
        options.check()
    except OptionError as error:
        raise click.UsageError(str(error)) from None
    return options


def tap_cluster(*, pod_regex: str | None, namespaces: tuple[str, ...], all_namespaces: bool, kubeconfig: str | None,
                context: str | None, release_namespace: str, image: str | None, image_pull_policy: str,
                storage_limit: str, proxy_host: str, proxy_port: int, no_open: bool, dry_run: bool,
                timeout: float, tls: bool, tolerate_control_plane: bool = False,
                tolerations: tuple[str, ...] = (), redaction: Redaction = Redaction(),
                hub_storage: str | None = None, hub_storage_class: str | None = None,
                dissect_memory: str | None = None) -> int:
    from shark.kube.client import context_namespace

    if all_namespaces and namespaces:
        raise click.UsageError("give either -n/--namespace or -A/--all-namespaces, not both")
    if all_namespaces:
        targets: tuple[str, ...] = ()
    else:   # like kubectl: without -n, the namespace of the kubeconfig's context
        targets = tuple(dict.fromkeys(namespaces)) or (context_namespace(kubeconfig, context),)
    deploy = _deploy_options(release_namespace, image, image_pull_policy, storage_limit, pod_regex, targets, tls,
                             tolerate_control_plane, tolerations, proxy_host, redaction, hub_storage,
                             hub_storage_class, dissect_memory)
    runner = runner_factory(kubeconfig, context, release_namespace)
    return runner.tap(deploy, _proxy(proxy_host, proxy_port, not no_open), timeout, dry_run)


def status_cluster(kubeconfig: str | None, context: str | None, release_namespace: str) -> int:
    return runner_factory(kubeconfig, context, release_namespace).status()


@click.command("open")
@cluster_options
@click.option("--proxy-host", default="127.0.0.1", show_default=True, help="Local address of the UI and API.")
@click.option("--proxy-port", type=click.IntRange(1, 65535), default=8899, show_default=True,
              help="Local port of the UI and API.")
@click.option("--no-open", is_flag=True, help="Forward the port but do not open the browser.")
@timeout_option
def open_command(kubeconfig: str | None, context: str | None, release_namespace: str, proxy_host: str,
                 proxy_port: int, no_open: bool, timeout: float) -> None:
    """Forward a local port to the running hub and open the UI, until Ctrl-C."""
    sys.exit(runner_factory(kubeconfig, context, release_namespace).open(
        _proxy(proxy_host, proxy_port, not no_open), timeout))


@click.command()
@cluster_options
@click.option("--keep-data", is_flag=True, help="Leave the stored packets on the nodes and the hub's volume of "
              "tap --hub-storage (its snapshots and scripts, with the namespace that holds it) for the next tap "
              "(deleted by default).")
@click.option("--timeout", type=click.FloatRange(1, 86_400), default=120.0, show_default=True, metavar="SECONDS",
              help="How long to wait for the workers to stop and the nodes' stores to be removed.")
def clean(kubeconfig: str | None, context: str | None, release_namespace: str, keep_data: bool,
          timeout: float) -> None:
    """Delete everything kubectl-shark created in the cluster, the Secret with its token, the
    hub's volume (snapshots) and the packets stored on the nodes included (safe to run twice)."""
    sys.exit(runner_factory(kubeconfig, context, release_namespace).clean(timeout, keep_data))


@click.command()
@cluster_options
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines until Ctrl-C.")
@click.option("--component", type=click.Choice(["hub", "worker"]), default=None,
              help="Only the hub's or only the workers' logs [default: both].")
@click.option("--node", metavar="NODE", default=None, help="Only the worker on this node.")
@click.option("--tail", type=click.IntRange(0, None), default=None, metavar="N",
              help="Only the last N lines of each log.")
def logs(kubeconfig: str | None, context: str | None, release_namespace: str, follow: bool,
         component: str | None, node: str | None, tail: int | None) -> None:
    """Print the hub's and the workers' logs, each line prefixed with where it came from."""
    components = (component,) if component else (("worker",) if node else ("hub", "worker"))
    sys.exit(runner_factory(kubeconfig, context, release_namespace).logs(components, follow, tail, node))

