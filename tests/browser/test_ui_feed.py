"""The traffic feed in a real browser: live rows, the filter (narrowing, errors with their
column, in the URL, history), pause/resume, following the live end, the keyboard."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlparse

import pytest
from playwright.sync_api import expect

from ui_support import open_ui

pytestmark = pytest.mark.root

ROWS = "#feed .feed-spacer .feed-row:not([hidden])"


def rows(page, text: str | re.Pattern[str] | None = None):
    locator = page.locator(ROWS)
    return locator.filter(has_text=text) if text is not None else locator


def test_rows_appear_live_with_their_columns(page, tap, site):
    open_ui(page, tap)
    site.get("/json?t=live-1")
    site.get("/status/503?t=live-2")
    site.post("/echo?t=live-3", json={"hello": "world"})

    row = rows(page, "GET /json?t=live-1")
    expect(row).to_have_count(1)
    expect(row.locator(".c-proto")).to_have_text("HTTP")
    expect(row.locator(".c-src")).to_have_text("127.0.0.1")
    expect(row.locator(".c-dst")).to_have_text(f"127.0.0.1:{site.port}")
    expect(row.locator(".c-status")).to_have_text("200")
    expect(row.locator(".c-status")).to_have_class(re.compile(r"\bst-ok\b"))
    expect(row.locator(".c-elapsed")).to_have_text(re.compile(r"^[0-9.]+ (ms|s)$"))
    expect(row.locator(".c-size")).to_have_text(re.compile(r"^[0-9.]+ (B|KiB)$"))
    expect(row.locator(".c-time")).to_have_text(re.compile(r"^\d\d:\d\d:\d\d\.\d\d\d$"))

    failing = rows(page, "GET /status/503?t=live-2")
    expect(failing.locator(".c-status")).to_have_text("503")
    expect(failing.locator(".c-status")).to_have_class(re.compile(r"\bst-error\b"))
    expect(rows(page, "POST /echo?t=live-3")).to_have_count(1)
    # nothing was reloaded: the rows came over the live stream
    assert page.evaluate("performance.getEntriesByType('navigation').length") == 1


def test_a_filter_narrows_the_feed_and_lives_in_the_url(page, tap, site):
    open_ui(page, tap)
    site.get("/json?t=narrow-before")
    expect(rows(page, "t=narrow-before")).to_have_count(1)

    query = f'{site.kfl} and request.path.startsWith("/status")'
    box = page.get_by_role("combobox", name="KFL filter")
    box.fill(query)
    expect(page.locator("#kfl-form")).to_have_attribute("data-state", "valid")
    box.press("Enter")
    expect(page.locator("#live-state")).to_have_text("live (SSE)")
    assert parse_qs(urlparse(page.url).query)["q"] == [query]
    expect(rows(page, "t=narrow-before")).to_have_count(0)

    site.get("/json?t=narrow-json")
    site.get("/status/500?t=narrow-500")
    site.get("/status/404?t=narrow-404")
    expect(rows(page, "GET /status/500?t=narrow-500")).to_have_count(1)
    expect(rows(page, "GET /status/404?t=narrow-404")).to_have_count(1)
    # every row shown matches the filter: the /json request never appears
    texts = rows(page).locator(".c-summary").all_inner_texts()
    assert texts and all(text.startswith("GET /status/") for text in texts), texts
    assert not any("narrow-json" in text for text in texts)

    # the URL shares the view: a new page with it shows the same filter, applied
    other = page.context.new_page()
    other.goto(page.url)
    expect(other.get_by_role("combobox", name="KFL filter")).to_have_value(query)
    expect(other.locator(ROWS).filter(has_text="narrow-500")).to_have_count(1)
    expect(other.locator(ROWS).filter(has_text="narrow-json")).to_have_count(0)

    # and it went into this browser's history, offered under the box
    page.get_by_role("button", name="History").click()
    expect(page.get_by_role("listbox", name="Filter history").get_by_role("option").first).to_have_text(query)


def test_an_invalid_filter_shows_its_error_at_its_column_and_is_not_applied(page, tap, site):
    open_ui(page, tap, site.kfl)
    box = page.get_by_role("combobox", name="KFL filter")
    box.fill("http and ==")
    message = page.locator("#kfl-message")
    expect(message).to_have_text(re.compile(r"^column 10: "))
    expect(box).to_have_attribute("aria-invalid", "true")
    mark = page.locator("#kfl-mirror mark")
    expect(mark).to_have_attribute("data-column", "10")
    expect(mark).to_have_text("=")
    # the mark sits under the 10th character of the box
    box_left = box.bounding_box()["x"]
    char_width = page.evaluate("""() => {
        const c = document.createElement('canvas').getContext('2d');
        c.font = getComputedStyle(document.querySelector('#kfl')).font;
        return c.measureText('m').width; }""")
    left = mark.bounding_box()["x"] - box_left
    assert 9 * char_width < left < 12 * char_width, (left, char_width)

    url = page.url
    box.press("Enter")
    expect(message).to_have_text(re.compile(r"^column 10: "))
    assert page.url == url
    expect(page.locator("#live-state")).to_have_text("live (SSE)")

    # fixing it clears the error
    box.fill("http and status == 200")
    expect(box).not_to_have_attribute("aria-invalid", "true")
    expect(page.locator("#kfl-mirror mark")).to_have_count(0)
    expect(message).to_have_text("valid — press Enter to apply")


def test_examples_are_offered_and_apply(page, tap, site):
    open_ui(page, tap)
    page.keyboard.press("/")   # from the focused box: the list must survive the box losing focus
    page.get_by_role("button", name="Examples").click()
    option = page.get_by_role("listbox", name="Filter examples").get_by_role("option").filter(has_text="failing HTTP requests")
    option.click()
    expect(page.get_by_role("combobox", name="KFL filter")).to_have_value("http and response.status >= 500")
    expect(page).to_have_url(re.compile(r"q=http\+and\+response\.status\+%3E%3D\+500"))


def test_pause_holds_new_rows_and_resume_shows_them(page, tap, site):
    open_ui(page, tap, site.kfl)
    site.get("/json?t=pause-0")
    expect(rows(page, "t=pause-0")).to_have_count(1)
    page.get_by_role("button", name="Pause").click()
    expect(page.locator("#live-state")).to_have_text("paused")
    site.get("/json?t=pause-1")
    site.get("/json?t=pause-2")
    expect(page.locator("#feed-notice")).to_have_text(re.compile(r"paused — 2 new"))
    expect(rows(page, re.compile(r"t=pause-[12]"))).to_have_count(0)
    page.keyboard.press("p")   # the shortcut resumes too
    expect(rows(page, re.compile(r"t=pause-[12]"))).to_have_count(2)
    expect(page.get_by_role("button", name="Pause")).to_have_attribute("aria-pressed", "false")


def test_following_the_live_end_stops_when_the_user_scrolls(page, tap, site):
    open_ui(page, tap, site.kfl)
    for number in range(60):
        site.get(f"/json?t=scroll-{number}")
    expect(rows(page, "t=scroll-59")).to_have_count(1)
    feed = page.locator("#feed")
    at_bottom = "el => el.scrollTop + el.clientHeight >= el.scrollHeight - 2"
    expect(page.locator("#jump")).to_be_hidden()
    assert feed.evaluate(at_bottom)

    feed.hover()
    page.mouse.wheel(0, -600)
    expect(page.locator("#jump")).to_be_visible()
    top_before = feed.evaluate("el => el.scrollTop")
    first_row = feed.evaluate("el => document.elementFromPoint(el.getBoundingClientRect().left + 200, el.getBoundingClientRect().top + 60).closest('.feed-row').dataset.id")
    for number in range(5):
        site.get(f"/json?t=scroll-more-{number}")
    expect(page.locator("#jump")).to_have_text("5 new — jump to live")
    # the rows in view stayed where they were
    assert feed.evaluate("el => el.scrollTop") == top_before
    assert first_row == feed.evaluate("el => document.elementFromPoint(el.getBoundingClientRect().left + 200, el.getBoundingClientRect().top + 60).closest('.feed-row').dataset.id")

    page.locator("#jump").click()
    expect(page.locator("#jump")).to_be_hidden()
    assert feed.evaluate(at_bottom)
    expect(rows(page, "t=scroll-more-4")).to_be_in_viewport()

    # newest on top: the live end is the top
    page.get_by_role("button", name="Newest at bottom").click()
    expect(page.get_by_role("button", name="Newest on top")).to_be_visible()
    assert feed.evaluate("el => el.scrollTop") == 0
    expect(rows(page).first).to_contain_text("t=scroll-more-4")


def test_keyboard_slash_focuses_the_filter_j_k_move_enter_opens(page, tap, site):
    open_ui(page, tap, site.kfl)
    for number in range(3):
        site.get(f"/json?t=keys-{number}")
    expect(rows(page, "t=keys-2")).to_have_count(1)
    page.locator("#feed").click(position={"x": 5, "y": 5})   # on the header: no row opened
    page.keyboard.press("/")
    expect(page.get_by_role("combobox", name="KFL filter")).to_be_focused()
    page.keyboard.press("Escape")
    page.keyboard.press("G")
    page.keyboard.press("j")
    selected = page.locator(f"{ROWS}.selected")
    expect(selected).to_have_count(1)
    first = selected.get_attribute("data-id")
    page.keyboard.press("j")
    expect(selected).not_to_have_attribute("data-id", first)
    page.keyboard.press("k")
    expect(selected).to_have_attribute("data-id", first)
    expect(selected).to_have_attribute("aria-selected", "true")
    page.keyboard.press("Enter")
    detail = page.get_by_role("region", name="Entry detail")
    expect(detail).to_be_visible()
    expect(detail.locator(".field-row").filter(has_text="id").first).to_contain_text(first)
    assert parse_qs(urlparse(page.url).query)["entry"] == [first]
    page.keyboard.press("Escape")
    expect(detail).to_be_hidden()


def test_limit_in_the_url_and_load_older(page, tap, site):
    for number in range(5):
        site.get(f"/json?t=older-{number}")
    query = f'{site.kfl} and request.path == "/json" and request.query["t"][0].startsWith("older-")'
    # wait until the hub has all five, so the page's first load is the last two of them
    from support.processes import wait_for
    wait_for(lambda: len(tap.api("/entries", params={"q": query}).json()["entries"]) == 5, timeout=30,
             what="5 entries at the hub")
    open_ui(page, tap, query, limit="2")
    expect(rows(page)).to_have_count(2)
    expect(rows(page, "t=older-4")).to_have_count(1)
    expect(rows(page, "t=older-3")).to_have_count(1)
    page.get_by_role("button", name="Load older").click()
    expect(rows(page)).to_have_count(5)
    assert rows(page).locator(".c-summary").all_inner_texts() == [f"GET /json?t=older-{n}" for n in range(5)]
    page.get_by_role("button", name="Load older").click()
    expect(page.locator("#feed-notice")).to_have_text("no older entries")


def test_an_invalid_filter_in_a_shared_url_says_so_and_shows_nothing(page, tap, site):
    page.goto(tap.login_url(q="http and =="))
    expect(page.get_by_role("combobox", name="KFL filter")).to_have_value("http and ==")
    expect(page.get_by_role("combobox", name="KFL filter")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#kfl-message")).to_have_text(re.compile(r"^column 10: "))
    expect(page.locator("#feed .feed-empty")).to_have_text(
        re.compile(r"^Nothing is shown: the filter is not valid KFL \(q: column 10: .*\)\.$"))
    expect(page.locator("#live-state")).to_have_text("stream refused")
    expect(rows(page)).to_have_count(0)
