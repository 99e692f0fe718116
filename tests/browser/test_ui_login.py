"""Logging in to the UI in a real browser: the address `tap` prints and opens carries the token
once; the hub trades it for an HttpOnly, SameSite=Strict cookie and takes it out of the address
bar; the page then works on the cookie alone (REST, the event stream, the WebSocket). Without it
the page asks for the token and shows no traffic."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from ui_support import open_ui

ROWS = "#feed .feed-spacer .feed-row:not([hidden])"


def session_cookie(page, tap) -> dict:
    port = tap.url.rsplit(":", 1)[1]
    cookies = [c for c in page.context.cookies() if c["name"] == f"shark_session_{port}"]
    assert len(cookies) == 1, page.context.cookies()
    return cookies[0]


def test_the_address_tap_prints_logs_in_and_leaves_no_token_behind(page, tap, site):
    page.goto(tap.login_url(q=site.kfl, view="traffic"))
    expect(page.locator("#live-state")).to_have_text(re.compile(r"^live \(SSE\)$"))
    assert "token" not in page.url and tap.token not in page.url
    assert re.search(r"[?&]q=dst\.port", page.url), page.url                      # the rest of it stays
    cookie = session_cookie(page, tap)
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict" and cookie["path"] == "/"
    assert tap.token not in cookie["value"]
    assert "shark_session" not in page.evaluate("document.cookie")                 # not for scripts
    expect(page.get_by_role("dialog", name="Log in to this hub")).to_be_hidden()
    site.get("/json?t=logged-in")                                                 # the feed works
    expect(page.locator(ROWS).filter(has_text="t=logged-in")).to_have_count(1)
    page.reload()                                                                 # and stays logged in
    expect(page.locator("#live-state")).to_have_text(re.compile(r"^live \(SSE\)$"))


def test_without_the_token_the_page_asks_for_it_and_shows_nothing(page, tap, site):
    site.get("/json?t=not-for-strangers")
    seen: list[str] = []
    page.on("response", lambda response: seen.append(f"{response.status} {response.url}"))
    page.goto(f"{tap.url}/?q={site.kfl.replace(' ', '+').replace('==', '%3D%3D')}")
    dialog = page.get_by_role("dialog", name="Log in to this hub")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("kubectl shark token")
    expect(page.locator("#live-state")).to_have_text("connecting…")            # no stream was opened
    expect(page.locator(ROWS)).to_have_count(0)
    api_answers = [line for line in seen if "/api/v1/" in line]
    assert api_answers and all(line.startswith("401 ") for line in api_answers), seen
    # a wrong token is refused by the hub, in one line
    page.get_by_label("Token").fill("not-the-token")
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("body")).to_contain_text("the token in the address is not this hub's")
    # the right one, pasted: logged in, the token gone from the address, the feed live
    page.goto(f"{tap.url}/?q={site.kfl.replace(' ', '+').replace('==', '%3D%3D')}")
    page.get_by_label("Token").fill(tap.token)
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#live-state")).to_have_text(re.compile(r"^live \(SSE\)$"))
    assert "token" not in page.url and "q=dst.port" in page.url
    expect(page.locator(ROWS).filter(has_text="t=not-for-strangers")).to_have_count(1)


def test_the_websocket_feed_works_on_the_cookie(page, tap, site):
    open_ui(page, tap, site.kfl, transport="ws")
    expect(page.locator("#live-state")).to_have_text("live (WebSocket)")
    session_cookie(page, tap)
    site.get("/json?t=ws-with-cookie")
    expect(page.locator(ROWS).filter(has_text="t=ws-with-cookie")).to_have_count(1)


def test_a_session_the_hub_no_longer_knows_brings_the_login_back(page, tap, site):
    open_ui(page, tap, site.kfl)
    port = tap.url.rsplit(":", 1)[1]
    # as after `clean` and a new tap: the cookie holds a session of another token
    page.context.add_cookies([{"name": f"shark_session_{port}", "value": "0" * 64, "url": tap.url + "/",
                               "httpOnly": True, "sameSite": "Strict"}])
    page.reload()
    expect(page.get_by_role("dialog", name="Log in to this hub")).to_be_visible()
    expect(page.locator("#live-state")).to_have_text("connecting…")
