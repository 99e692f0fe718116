"""Errors the CLI reports, and the one place that maps an exception to an exit status.

Every failure the user can act on is a SharkError: a one-line message and an optional hint.
Anything else is a bug: one line saying so, and the traceback only with --debug (httpie's way).
"""

from __future__ import annotations

import enum
import traceback

import click
import httpx


class ExitStatus(enum.IntEnum):
    OK = 0
    ERROR = 1
    USAGE = 2
    CTRL_C = 130


class SharkError(Exception):
    """A failure with a one-line reason and, where one helps, a hint of what to do; `details`
    are indented lines after the reason (e.g. each pod that is not ready and why)."""

    def __init__(self, message: str, hint: str | None = None, details: list[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.details = details or []


class HubUnreachable(SharkError):
    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot reach the hub at {url}: {reason}",
                         hint="is `kubectl shark tap --local` running? (or pass --hub URL)")


class NoKubeconfig(SharkError):
    def __init__(self, reason: str) -> None:
        super().__init__(f"no cluster to talk to: {reason}",
                         hint="pass --kubeconfig FILE or set KUBECONFIG (kubectl's own config works); "
                              "for capture on this machine use `kubectl shark tap --local`")


class ClusterUnreachable(SharkError):
    def __init__(self, server: str, reason: str, context: str | None) -> None:
        check = f"kubectl cluster-info --context {context}" if context else "kubectl cluster-info"
        super().__init__(f"cannot reach the cluster at {server}: {reason}",
                         hint=f"is the cluster running and the kubeconfig current? check with `{check}`")


class Forbidden(SharkError):
    """RBAC refused one verb on one resource: say which, and how to check it."""

    def __init__(self, verb: str, resource: str, namespace: str | None, message: str) -> None:
        where = f" in namespace {namespace}" if namespace else " (cluster-wide)"
        check = f"kubectl auth can-i {verb} {resource}" + (f" -n {namespace}" if namespace else "")
        super().__init__(f"not allowed to {verb} {resource}{where}: {message}",
                         hint=f"your account needs RBAC permission to {verb} {resource}{where}; "
                              f"check with `{check}` and ask a cluster admin for a role that allows it")
        self.verb, self.resource, self.namespace = verb, resource, namespace


class KubeApiError(SharkError):
    """The API server refused a request for another reason: its Status message in one line."""

    def __init__(self, message: str, status: int, hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.status = status


class HubError(SharkError):
    """The hub answered with an error: its {error, detail} in one line."""

    def __init__(self, message: str, status: int, hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.status = status


def report(error: BaseException, debug: bool = False) -> ExitStatus:
    """Print what went wrong on stderr and return the exit status for it."""
    if debug and not isinstance(error, (click.UsageError, KeyboardInterrupt, click.Abort)):
        click.echo("".join(traceback.format_exception(error)).rstrip(), err=True)
    if isinstance(error, click.UsageError):
        error.show()
        return ExitStatus.USAGE
    if isinstance(error, (KeyboardInterrupt, click.Abort)):
        click.echo("interrupted", err=True)
        return ExitStatus.CTRL_C
    if isinstance(error, SharkError):
        click.echo(f"kubectl-shark: {error.message}", err=True)
        for line in error.details:
            click.echo(f"  {line}", err=True)
        if error.hint:
            click.echo(f"hint: {error.hint}", err=True)
        return ExitStatus.ERROR
    if isinstance(error, click.ClickException):
        error.show()
        return ExitStatus(error.exit_code) if error.exit_code in (0, 1, 2) else ExitStatus.ERROR
    if isinstance(error, OSError):
        where = f"{error.filename}: " if error.filename else ""
        click.echo(f"kubectl-shark: {where}{error.strerror or error}", err=True)
        return ExitStatus.ERROR
    if isinstance(error, httpx.HTTPError):
        click.echo(f"kubectl-shark: HTTP error: {type(error).__name__}: {error}", err=True)
        return ExitStatus.ERROR
    click.echo(f"kubectl-shark: unexpected error: {type(error).__name__}: {error}", err=True)
    if not debug:
        click.echo("hint: run again with --debug for the traceback, and report it", err=True)
    return ExitStatus.ERROR
