"""shark/auth.py's decisions on requests as ASGI scopes, and its helpers: the edges the
end-to-end tests (tests/integration/test_access.py, real sockets) do not reach one by one."""

from __future__ import annotations

from pathlib import Path

import pytest

from shark.auth import (COOKIE_PREFIX, Guard, ListenRefused, Policy, check_listen, host_name, is_loopback,
                        split_host, static_files)
from shark.token import session_value

TOKEN = "unit-token"


def scope(method: str = "GET", path: str = "/api/v1/status", *headers: tuple[str, str], query: str = "",
          kind: str = "http", scheme: str = "http") -> dict:
    return {"type": kind, "method": method, "path": path, "query_string": query.encode(), "scheme": scheme,
            "headers": [(k.lower().encode(), v.encode()) for k, v in (("host", "127.0.0.1:8899"), *headers)]}


def decide(policy: Policy, *args, **kwargs):
    answer = Guard(lambda *a: None, policy).decide(scope(*args, **kwargs))
    return None if answer is None else answer.status


HUB = Policy(TOKEN, "hub", frozenset({"127.0.0.1", "localhost", "::1"}), browser_login=True,
             public=lambda path: path in ("/", "/app.css"))
BEARER = ("authorization", f"Bearer {TOKEN}")


@pytest.mark.parametrize(("host", "allowed"), [
    ("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("LOCALHOST.", True), ("0.0.0.0", False), ("::", False), ("10.0.0.5", False), ("shark.example.com", False)])
def test_only_loopback_listens_without_a_token(host, allowed):
    assert is_loopback(host) is allowed
    if allowed:
        check_listen(host, 8897, None)
    else:
        with pytest.raises(ListenRefused, match=r"^--listen: .* is not a loopback address and no token is set"):
            check_listen(host, 8897, None)
    check_listen(host, 8897, TOKEN)           # with a token, anywhere


@pytest.mark.parametrize(("header", "expected"), [
    ("127.0.0.1:8899", ("127.0.0.1", 8899)), ("LocalHost", ("localhost", 80)), ("[::1]:9000", ("::1", 9000)),
    ("[::1]", ("::1", 80)), ("shark.example.com.:443", ("shark.example.com", 443)), ("a:b", ("a", -1)),
    ("", ("", 80))])
def test_host_headers_split_into_name_and_port(header, expected):
    assert split_host(header, 80) == expected


def test_names_to_serve_are_checked():
    assert host_name("Shark.Example.com.", "--allowed-host") == "shark.example.com"
    assert host_name("[::1]", "--allowed-host") == "::1"
    assert host_name("10.0.0.5", "--allowed-host") == "10.0.0.5"
    for bad in ("", "http://x", "x:8899", "a b", "x/y", "user@x"):
        with pytest.raises(ValueError, match=r"^--allowed-host: .* is not a host name"):
            host_name(bad, "--allowed-host")


def test_the_spa_files_are_public_and_nothing_outside_them(tmp_path: Path):
    spa = tmp_path / "spa"
    (spa / "js").mkdir(parents=True)
    (spa / "js" / "main.js").write_text("x")
    (tmp_path / "secret.txt").write_text("no")
    (spa / "js" / "link.js").symlink_to(tmp_path / "secret.txt")
    public = static_files(spa)
    assert public("/") and public("/js/main.js")
    for path in ("/js", "/js/missing.js", "/../secret.txt", "/js/../../secret.txt", "/js/link.js", "/api/v1/x"):
        assert not public(path), path
    assert not static_files(None)("/")


def test_the_token_in_a_header_or_the_session_cookie():
    assert decide(HUB) == 401
    assert decide(HUB, "GET", "/api/v1/status", BEARER) is None
    assert decide(HUB, "GET", "/api/v1/status", ("authorization", f"BEARER  {TOKEN} ")) is None
    assert decide(HUB, "GET", "/api/v1/status", ("authorization", TOKEN)) == 401
    cookie = f"{COOKIE_PREFIX}8899={session_value(TOKEN)}"
    assert decide(HUB, "GET", "/api/v1/status", ("cookie", f"theme=dark; {cookie}")) is None
    # a session cookie is for one port (one hub); another hub's is no use here
    assert decide(HUB, "GET", "/api/v1/status", ("cookie", f"{COOKIE_PREFIX}9000={session_value(TOKEN)}")) == 401
    worker = Policy(TOKEN, "worker")
    assert decide(worker, "GET", "/api/v1/status", ("cookie", cookie)) == 401     # workers take no cookies
    assert decide(HUB, "GET", "/") is None and decide(HUB, "HEAD", "/app.css") is None
    assert decide(HUB, "POST", "/app.css") == 401                                  # public is GET only
    assert decide(HUB, "GET", "/healthz", ("host", "evil.example")) is None


def test_changes_take_json_or_no_body():
    assert decide(HUB, "POST", "/api/v1/scripts", BEARER, ("content-type", "application/json; charset=utf-8"),
                  ("content-length", "2")) is None
    assert decide(HUB, "POST", "/api/v1/scripts/a/jobs/b/run", BEARER, ("content-length", "0")) is None
    assert decide(HUB, "DELETE", "/api/v1/scripts/a", BEARER) is None
    for content_type in ("text/plain", "application/json-patch+json", "application/x-www-form-urlencoded", ""):
        assert decide(HUB, "PUT", "/api/v1/targets", BEARER, ("content-type", content_type)) == 415, content_type
    assert decide(HUB, "POST", "/api/v1/scripts", BEARER, ("transfer-encoding", "chunked")) == 415
    assert decide(HUB, "PATCH", "/api/v1/scripts/a", BEARER, ("content-length", "5")) == 415


def test_origins_are_compared_with_the_host_by_name_and_port():
    post = ("POST", "/api/v1/scripts", BEARER, ("content-type", "application/json"))
    assert decide(HUB, *post, ("origin", "http://127.0.0.1:8899")) is None
    assert decide(HUB, *post, ("origin", "http://127.0.0.1:8900")) == 403
    assert decide(HUB, *post, ("origin", "http://localhost:8899")) == 403     # another origin, same machine
    assert decide(HUB, *post, ("origin", "null")) == 403
    assert decide(HUB, "GET", "/api/v1/ws", BEARER, ("origin", "https://evil.example"), kind="websocket") == 403
    assert decide(HUB, "GET", "/api/v1/ws", BEARER, ("origin", "http://127.0.0.1:8899"), kind="websocket") is None
    assert decide(HUB, "GET", "/api/v1/status", BEARER, ("origin", "http://evil.example")) is None   # CORS's part


def test_login_keeps_the_rest_of_the_address_and_its_prefix():
    guard = Guard(lambda *a: None, HUB)
    answer = guard.decide(scope("GET", "/proxy/shark/", query=f"q=http+and+x%3D%3D1&token={TOKEN}&view=map"))
    assert answer is not None and answer.status == 303
    headers = dict(answer.headers)
    assert headers["location"] == "./?q=http+and+x%3D%3D1&view=map"
    assert headers["set-cookie"].startswith(f"{COOKIE_PREFIX}8899={session_value(TOKEN)}; Path=/;")
    secure = guard.decide(scope("GET", "/", query="token=" + TOKEN.replace("-", "%2D"), scheme="https"))
    assert secure is not None and dict(secure.headers)["set-cookie"].endswith("; Secure")
    assert guard.decide(scope("GET", "/", query="token=wrong")).status == 401
    assert guard.decide(scope("GET", "/api/v1/status", query=f"token={TOKEN}")).status == 401   # pages only
