"""The hub's command-line options for scripting (python -m hub --script-...)."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any

import click

from hub.scripts.service import ScriptSettings
from shark.units import UnitError, parse_size

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MIN_MEMORY_LIMIT = 4 * 1024 * 1024   # the helpers alone take about 0.2 MB; scripts need room


def script_options(command: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--script-env", "script_env", multiple=True, metavar="NAME[=VALUE]", envvar="SHARK_SCRIPT_ENV",
                     help="A variable scripts read as env.NAME; without =VALUE the value is the hub's "
                          "environment variable NAME (keeps secrets out of the command line). Repeat "
                          "(or $SHARK_SCRIPT_ENV, space-separated)."),
        click.option("--script-allow-host", "script_allowed_hosts", multiple=True, metavar="HOST[:PORT]",
                     envvar="SHARK_SCRIPT_ALLOW_HOSTS",
                     help="A host vendor.webhook/vendor.slack may reach (wildcards like *.slack.com); "
                          "none by default. Repeat (or $SHARK_SCRIPT_ALLOW_HOSTS, space-separated)."),
        click.option("--script-time-limit", type=click.FloatRange(0.01, 60), default=1.0, show_default=True,
                     envvar="SHARK_SCRIPT_TIME_LIMIT",
                     help="CPU seconds one hook call or job run may take before it is stopped."),
        click.option("--script-memory-limit", default="64MiB", show_default=True, envvar="SHARK_SCRIPT_MEMORY_LIMIT",
                     help="Memory one script may use (64MiB, 256MB, ...)."),
        click.option("--script-max-count", type=click.IntRange(1, 1_000), default=16, show_default=True,
                     envvar="SHARK_SCRIPT_MAX_COUNT",
                     help="Scripts the hub takes at once (their memory is at most this x --script-memory-limit)."),
        click.option("--script-snapshot-limit", default="200MB", show_default=True, envvar="SHARK_SCRIPT_SNAPSHOT_LIMIT",
                     help="Bytes all the scripts' pcap.snapshot() files may take under --state-dir; a "
                          "snapshot that would pass it is not written (said in the script's log)."),
        click.option("--script-max-failures", type=click.IntRange(1, 10_000), default=5, show_default=True,
                     envvar="SHARK_SCRIPT_MAX_FAILURES",
                     help="Failures within a minute after which a script is disabled."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def script_settings(script_env: tuple[str, ...], script_allowed_hosts: tuple[str, ...], script_time_limit: float,
                    script_memory_limit: str, script_max_failures: int, script_max_count: int = 16,
                    script_snapshot_limit: str = "200MB") -> ScriptSettings:
    env: dict[str, str] = {}
    for item in script_env:
        name, sep, value = item.partition("=")
        if not _ENV_NAME.match(name):
            raise click.BadParameter(f"{item!r}: {name!r} is not a variable name (letters, digits, _)",
                                     param_hint="--script-env")
        if not sep:
            if name not in os.environ:
                raise click.BadParameter(f"{name}: no such environment variable in the hub's environment "
                                         "(give NAME=VALUE, or set it)", param_hint="--script-env")
            value = os.environ[name]
        env[name] = value
    try:
        memory = parse_size(script_memory_limit, "--script-memory-limit")
    except UnitError as error:
        raise click.BadParameter(str(error), param_hint="--script-memory-limit") from None
    try:
        snapshot_limit = parse_size(script_snapshot_limit, "--script-snapshot-limit")
    except UnitError as error:
        raise click.BadParameter(str(error), param_hint="--script-snapshot-limit") from None
    if memory < MIN_MEMORY_LIMIT:
        raise click.BadParameter(f"{script_memory_limit} is below the minimum of 4MiB",
                                 param_hint="--script-memory-limit")
    return ScriptSettings(env=env, allowed_hosts=list(script_allowed_hosts), time_limit_s=script_time_limit,
                          memory_limit=memory, max_failures=script_max_failures, max_scripts=script_max_count,
                          snapshot_limit=snapshot_limit)
