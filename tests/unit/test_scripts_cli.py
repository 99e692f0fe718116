"""`kubectl shark scripts list|add|rm|enable|disable|logs` in-process against a real hub."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.processes import ROOT, free_port, wait_for
from unit.test_cli import shark
from unit.test_scripts_api import RunningHub, running_hub


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[RunningHub]:
    with running_hub(tmp_path / "state") as running:
        yield running


def write(tmp_path: Path, name: str, code: str) -> str:
    path = tmp_path / name
    path.write_text(code)
    return str(path)


def test_add_list_disable_enable_rm(hub: RunningHub, tmp_path: Path) -> None:
    empty = shark("scripts", "list", "--hub", hub.url)
    assert empty.exit_status == 0 and empty.startswith("no scripts (kept in ")
    file = write(tmp_path, "tag-5xx.js", "function onItemCaptured(e) { if (e.status >= 500) test.fail(e); }\n"
                                         "jobs.schedule('sweep', '0 * * * *', function () {});")
    added = shark("scripts", "add", file, "--hub", hub.url)
    assert added.exit_status == 0, added.stderr
    assert added.strip() == "added tag-5xx (running; onItemCaptured; 1 jobs)"
    assert shark("scripts", "add", file, "--hub", hub.url).startswith("replaced tag-5xx")
    listing = shark("scripts", "list", "--hub", hub.url)
    header, row = listing.splitlines()
    assert header.split() == ["NAME", "STATE", "HOOKS", "JOBS", "CALLS", "FAILED", "PROBLEM"]
    assert row.split() == ["tag-5xx", "running", "onItemCaptured", "1", "0", "0"]
    as_json = shark("scripts", "list", "-o", "json", "--hub", hub.url).json
    assert as_json[0]["name"] == "tag-5xx" and as_json[0]["jobs"][0]["name"] == "sweep"

    assert shark("scripts", "disable", "tag-5xx", "--hub", hub.url).strip() == "tag-5xx: disabled"
    assert shark("scripts", "enable", "tag-5xx", "--hub", hub.url).strip() == "tag-5xx: running"
    missing = shark("scripts", "enable", "nope", "--hub", hub.url)
    assert missing.exit_status == 1 and "no script named 'nope'" in missing.stderr
    assert hub.http.get("/scripts/nope").status_code == 404   # enable never creates one
    assert shark("scripts", "rm", "tag-5xx", "--hub", hub.url).strip() == "deleted tag-5xx"
    gone = shark("scripts", "rm", "tag-5xx", "--hub", hub.url)
    assert gone.exit_status == 1 and "script tag-5xx: no script named 'tag-5xx'" in gone.stderr


def test_add_reports_a_syntax_error_like_a_compiler(hub: RunningHub, tmp_path: Path) -> None:
    file = write(tmp_path, "broken.js", "function onItemCaptured(e) {\n  var x = ;\n}\n")
    result = shark("scripts", "add", file, "--name", "fixme", "--hub", hub.url)
    assert result.exit_status == 1
    assert result.stderr.strip() == f"kubectl-shark: {file}:2:11: SyntaxError: unexpected token in expression: ';'"
    runaway = write(tmp_path, "runaway.js", "while (true) {}")
    result = shark("scripts", "add", runaway, "--hub", hub.url)
    assert result.exit_status == 1 and "the script failed when it was loaded: stopped: ran longer" in result.stderr
    binary = tmp_path / "binary.js"
    binary.write_bytes(b"\xff\xfe\x00")
    assert "not UTF-8 text" in shark("scripts", "add", str(binary), "--hub", hub.url).stderr
    assert shark("scripts", "list", "--hub", hub.url).startswith("no scripts")


def test_logs_and_follow(hub: RunningHub, tmp_path: Path) -> None:
    file = write(tmp_path, "talk.js", "function onHubAction(a) { console.log('heard', a); console.error('bad', a); }")
    shark("scripts", "add", file, "--hub", hub.url)
    hub.http.post("/scripts/actions", json={"action": "hello"})
    hub.wait_log("talk", "bad hello")
    lines = shark("scripts", "logs", "--script", "talk", "--hub", hub.url).splitlines()
    assert lines[0].endswith("[talk] hub: loaded (onHubAction; 0 jobs)")
    assert lines[-2].endswith("[talk] heard hello") and lines[-1].endswith("[talk] ERROR bad hello")
    assert len(shark("scripts", "logs", "--tail", "1", "--hub", hub.url).splitlines()) == 1

    # -f in a real process, stopped with Ctrl-C (SIGINT) like a person would
    follower = subprocess.Popen([sys.executable, "-m", "shark.cli", "scripts", "logs", "-f", "--tail", "1",
                                 "--hub", hub.url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                cwd=ROOT)
    seen: list[str] = []
    reader = threading.Thread(target=lambda: seen.extend(iter(follower.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        wait_for(lambda: seen, what="the backlog line")
        hub.http.post("/scripts/actions", json={"action": "later"})
        wait_for(lambda: any("[talk] ERROR bad later" in line for line in seen), what="the followed line")
    finally:
        follower.send_signal(2)
        code = follower.wait(10)
        reader.join(5)
        follower.stdout.close()  # type: ignore[union-attr]
        follower.stderr.close()  # type: ignore[union-attr]
    assert code in (0, 130)


def test_an_unreachable_hub_is_one_line_and_status_1() -> None:
    result = shark("scripts", "list", "--hub", f"http://127.0.0.1:{free_port()}")
    assert result.exit_status == 1
    assert result.stderr.startswith("kubectl-shark: cannot reach the hub at http://127.0.0.1:")
    assert "hint: is `kubectl shark tap --local` running?" in result.stderr
    started = time.monotonic()
    assert shark("scripts", "logs", "-f", "--hub", f"http://127.0.0.1:{free_port()}").exit_status == 1
    assert time.monotonic() - started < 10
