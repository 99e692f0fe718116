"""Where the hub-facing commands find the token (shark/credentials.py), against a mocked hub
(respx) that asks for one: SHARK_TOKEN, the state dir's file, none, and what the user is told
when none works. The cluster's Secret as a source: tests/kube/test_kube_security.py."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import respx

from unit.test_cli import HUB, CLIResult, shark

STATUS = {"hub": {"version": "t", "uptime_s": 1, "workers": 0, "workers_ok": 0}, "workers": []}


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    monkeypatch.delenv("SHARK_TOKEN", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-kubeconfig"))     # no cluster to fall back on
    return tmp_path / "shark"


def hub_wanting(token: str | None) -> tuple[respx.MockRouter, list[str | None]]:
    seen: list[str | None] = []

    def answer(request: httpx.Request) -> httpx.Response:
        given = request.headers.get("authorization")
        seen.append(given)
        if token is None or given == f"Bearer {token}":
            return httpx.Response(200, json=STATUS)
        detail = "no token: send Authorization: Bearer TOKEN" if given is None else "the token is not this hub's"
        return httpx.Response(401, json={"error": "unauthorized", "detail": detail})
    router = respx.mock(base_url=HUB + "/api/v1", assert_all_called=False)
    router.get("/status").mock(side_effect=answer)
    return router, seen


def status_with(state: Path, stored: str | None, wanted: str | None) -> tuple[CLIResult, list[str | None]]:
    """`kubectl shark status` with `stored` in the state dir's token file, against a hub wanting `wanted`."""
    if stored is not None:
        state.mkdir(parents=True)
        (state / "token").write_text(stored)
    router, seen = hub_wanting(wanted)
    with router:
        return shark("status", "--hub", HUB), seen


def test_the_state_dirs_token_is_sent(state: Path):
    result, seen = status_with(state, "from-the-file\n", "from-the-file")
    assert result.exit_status == 0, result.stderr
    assert seen == ["Bearer from-the-file"]


def test_shark_token_overrides_the_file_and_is_the_only_one_tried(state: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SHARK_TOKEN", "from-the-env")
    refused, seen = status_with(state, "from-the-file\n", "from-the-file")
    assert seen == ["Bearer from-the-env"]
    assert refused.exit_status == 1
    assert refused.stderr.splitlines() == [
        "kubectl-shark: the hub refused the token: the token is not this hub's",
        "hint: looked for the token in: SHARK_TOKEN; set SHARK_TOKEN (`kubectl shark token` prints the cluster's, "
        "`kubectl shark token --local` the local one)"]


def test_without_any_token_a_hub_that_needs_none_is_asked_as_it_is(state: Path):
    result, seen = status_with(state, None, None)
    assert result.exit_status == 0 and seen == [None]


def test_nowhere_to_find_it_says_where_it_looked(state: Path):
    refused, seen = status_with(state, None, "secret")
    assert seen == [None]
    assert refused.exit_status == 1
    assert refused.stderr.splitlines()[0] == ("kubectl-shark: the hub refused the token: no token: send "
                                              "Authorization: Bearer TOKEN")
    assert refused.stderr.splitlines()[1].startswith(
        f"hint: looked for the token in: SHARK_TOKEN (not set); {state / 'token'} (none); a cluster (no cluster "
        f"to talk to: no kubeconfig at {state.parent / 'no-kubeconfig'})")


def test_an_unreadable_token_file_is_named(state: Path):
    refused, _ = status_with(state, "  \n", "secret")
    assert f"{state / 'token'}: the token is empty" in refused.stderr


def test_scripts_commands_send_it_too(state: Path):
    state.mkdir(parents=True)
    (state / "token").write_text("from-the-file\n")
    with respx.mock(base_url=HUB + "/api/v1", assert_all_called=True) as router:
        listing = router.get("/scripts", headers={"Authorization": "Bearer from-the-file"}).respond(
            json={"scripts": [], "store": "memory"})
        result = shark("scripts", "list", "--hub", HUB)
    assert result.exit_status == 0 and listing.call_count == 1
