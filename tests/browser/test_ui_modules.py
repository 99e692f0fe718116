"""The SPA's modules in a real browser, served as files (python -m http.server), without a hub:
every filter clause the detail offers is valid KFL that matches its own entry (checked with
shark.kfl), service-map endpoints become clauses that match them, bodies are recognised and
dumped, the store orders, de-duplicates and caps, the list stays virtual."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from shark import kfl
from support.processes import Proc, free_port
from ui_support import ROOT

TRICKY_ENTRY: dict[str, Any] = {
    "id": "node-a:42", "node": "node-a", "protocol": "http", "ts": 1764150000.123456, "elapsed_ms": 12.5,
    "src": {"ip": "10.0.0.7", "port": 41234, "name": "frontend", "namespace": "shop", "kind": "pod"},
    "dst": {"ip": "fd00::9", "port": 8080, "name": "", "namespace": "", "kind": ""},
    "summary": 'GET /api/ümlaut?q="x"', "status": 503,
    "request": {"method": "GET", "path": "/api/ümlaut", "query": {"a b": ["1", "2"], "q": ['"x"']},
                "version": "HTTP/1.1", "content_length": 0,
                "headers": {"x-weird\"name": 'va"lue\\with\nnewline', "accept": "*/*", "x-emoji": "🦈",
                            "set-cookie": ["a=1", "b=2"]}},
    "response": {"status": 503, "reason": "Service Unavailable", "error": None, "retry": True,
                 "answers": [{"name": "a.test", "ttl": 60}, {"name": "b.test", "ttl": 0}],
                 "headers": {"content-type": "application/json"}},
    "size": {"request": 120, "response": 340}, "tls": False, "tags": ["test.fail", 'we"ird'],
    "complete": True, "notes": ["gap in response body"],
}


@pytest.fixture(scope="module")
def files() -> Iterator[str]:
    """spa/ served as plain files, as any static server would."""
    port = free_port()
    server = Proc([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                   "--directory", str(ROOT / "spa")])
    server.wait_line(r"Serving HTTP")
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def mod(page, files):
    """Evaluate JS with the SPA's modules imported: mod("entries.js", "(m) => ...")."""
    page.goto(f"{files}/js/")

    def run(module: str, body: str, arg: Any = None) -> Any:
        return page.evaluate(f"async (arg) => {{ const m = await import('/js/{module}'); return ({body})(m, arg); }}", arg)
    return run


def test_every_field_the_detail_offers_is_kfl_that_matches_its_entry(mod):
    clauses = mod("detail.js", """(m, entry) => {
        const view = new m.DetailView({ root: document.body, onFilter: () => {} });
        document.body.replaceChildren(view.render(entry));
        return [...document.querySelectorAll("[data-kfl]")].map((el) => el.dataset.kfl);
    }""", TRICKY_ENTRY)
    assert len(clauses) >= 30, clauses
    for expected in ('request.headers["x-weird\\"name"] == "va\\"lue\\\\with\\nnewline"',
                     'request.query["a b"].contains("2")', "response.answers[1].ttl == 0",
                     'tags.contains("we\\"ird")', "http", "response.error == null",
                     'request.headers["set-cookie"].contains("b=2")', 'dst.ip == "fd00::9"'):
        assert expected in clauses, (expected, clauses)
    for clause in clauses:
        query = kfl.compile(clause)            # valid KFL, or KflError with the column
        assert query.test(json.loads(json.dumps(TRICKY_ENTRY))) is True, f"{clause} does not match its entry"


def test_service_map_endpoints_become_clauses_that_match_them(mod):
    cases = [({"id": "10.0.0.7", "name": "10.0.0.7", "namespace": ""}, {"ip": "10.0.0.7", "port": 5555}),
             ({"id": "10.0.0.9:8080", "name": "10.0.0.9:8080", "namespace": ""}, {"ip": "10.0.0.9", "port": 8080}),
             ({"id": "fd00::9", "name": "fd00::9", "namespace": ""}, {"ip": "fd00::9", "port": 1}),
             ({"id": "[fd00::9]:443", "name": "[fd00::9]:443", "namespace": ""}, {"ip": "fd00::9", "port": 443}),
             ({"id": "shop/checkout", "name": "checkout", "namespace": "shop"},
              {"ip": "10.1.1.1", "port": 80, "name": "checkout", "namespace": "shop"}),
             ({"id": "db.internal", "name": "db.internal", "namespace": ""},
              {"ip": "10.1.1.2", "port": 5432, "name": "db.internal"})]
    for node, endpoint in cases:
        clause = mod("servicemap.js", "(m, node) => m.endpointClause(node, 'dst')", node)
        other = {"ip": "192.0.2.1", "port": 9, "name": "elsewhere", "namespace": "x"}
        assert kfl.compile(clause).test({"src": other, "dst": {"name": "", "namespace": "", **endpoint}}) is True, clause
        assert kfl.compile(clause).test({"src": other, "dst": other}) is False, clause


def test_add_clause_keeps_the_meaning_of_an_or(mod):
    assert mod("filterbox.js", "(m) => m.addClause('', 'http')") == "http"
    assert mod("filterbox.js", "(m) => m.addClause('dns or redis', 'status == 0')") == "(dns or redis) and status == 0"
    assert mod("filterbox.js", "(m) => m.addClause('http', 'status == 500')") == "http and status == 500"


def test_bodies_are_recognised_and_binary_is_dumped_as_hex(mod):
    kinds = mod("bodies.js", """(m) => [
        m.bodyKind({data: '{"a": [1]}', encoding: "text"}, "application/json"),
        m.bodyKind({data: '[1, 2]', encoding: "text"}, ""),
        m.bodyKind({data: '{not json', encoding: "text"}, "application/json"),
        m.bodyKind({data: '<?xml version="1.0"?><a x="1"><b>t</b></a>', encoding: "text"}, ""),
        m.bodyKind({data: '<html><body>x</body></html>', encoding: "text"}, "text/html"),
        m.bodyKind({data: 'AAEC', encoding: "base64"}, "application/octet-stream"),
    ]""")
    assert kinds == ["json", "json", "text", "xml", "text", "binary"]
    dump = mod("bodies.js", "(m) => m.hexDump(new Uint8Array([0, 65, 66, 10, 255, 0x7e, 0x7f, 32, 1, 2, 3, 4, 5, 6, 7, 8, 9])).textContent")
    assert dump.splitlines() == ["00000000  00 41 42 0a ff 7e 7f 20  01 02 03 04 05 06 07 08  |.AB..~. ........|",
                                 "00000010  " + "09 ".ljust(49) + " |.|"]   # short lines padded to the column
    xml = mod("bodies.js", """(m) => m.renderBody({data: '<a x="1"><b>t</b><c/></a>', encoding: "text", size: 24}, "application/xml", "R")
                               .querySelector("pre").textContent""")
    assert xml == '<a x="1">\n  <b>t</b>\n  <c/>\n</a>'


def test_the_store_orders_deduplicates_and_caps(mod):
    result = mod("entries.js", """(m) => {
        const store = new m.EntryStore(10);
        const entry = (n, ts) => ({ id: `n:${n}`, node: "n", ts, protocol: "http", src: {}, dst: {}, summary: `#${n}`,
                                    status: 200, response: { status: 200 }, elapsed_ms: 1, size: { request: 1, response: 2 } });
        const first = store.add([entry(1, 10), entry(2, 20), entry(3, 30)]);
        const older = store.add([entry(0, 5), entry(2, 20), entry(25, 25), { id: 7 }, null]);
        const live = store.add(Array.from({ length: 9 }, (_, i) => entry(100 + i, 100 + i)));
        return { first, older, live, ids: store.items.map((r) => r.id), trimmed: store.trimmed,
                 again: store.add([entry(0, 5)]).prepended, size: store.items[0].size };
    }""")
    assert result["first"] == {"added": 3, "removed": 0, "prepended": 0}
    assert result["older"] == {"added": 0, "removed": 0, "prepended": 2}   # the duplicate and the junk left out
    assert result["live"] == {"added": 9, "removed": 5, "prepended": 0}    # 14 > 10: down to 95% of the cap
    assert result["ids"] == [f"n:{100 + i}" for i in range(9)]   # the 5 oldest went
    assert result["trimmed"] == 5
    assert result["again"] == 1   # a dropped row may come back (from "Load older")
    assert result["size"] == 3


def test_the_list_keeps_only_the_rows_in_view(mod):
    result = mod("feedview.js", """async (m) => {
        const { EntryStore } = await import("/js/entries.js");
        const viewport = document.createElement("div");
        viewport.style.cssText = "height: 400px; overflow: auto; position: relative";
        document.body.replaceChildren(viewport);
        const store = new EntryStore();
        store.add(Array.from({ length: 10000 }, (_, i) => ({ id: `n:${i}`, node: "n", ts: i, protocol: "http",
          src: { ip: "10.0.0.1", port: 1 }, dst: { ip: "10.0.0.2", port: 80 }, summary: `GET /${i}`, status: 200,
          response: {}, elapsed_ms: 1, size: {} })));
        const feed = new m.FeedView({ viewport, store, emptyText: () => "" });
        feed.changed({ added: 10000 });
        feed.draw();
        const frame = () => new Promise((r) => requestAnimationFrame(() => r()));
        const shown = () => [...viewport.querySelectorAll(".feed-spacer .feed-row:not([hidden])")];
        const atBottom = { rows: shown().length, last: shown().at(-1).dataset.id, follow: feed.follow };
        viewport.scrollTop = 5000 * m.ROW_HEIGHT;
        await frame(); await frame();
        const middle = shown().map((row) => [row.dataset.id, Number(row.getAttribute("aria-rowindex"))]);
        feed.setOrder("top");
        feed.draw();
        const top = shown()[0].dataset.id;
        return { atBottom, middle, top, follow: feed.follow, rowcount: viewport.getAttribute("aria-rowcount") };
    }""")
    assert result["atBottom"] == {"rows": result["atBottom"]["rows"], "last": "n:9999", "follow": True}
    assert result["atBottom"]["rows"] < 60   # 10000 rows, a few dozen in the DOM
    ids = dict(result["middle"])
    assert "n:5000" in ids and ids["n:5000"] == 5002   # row index + the header row, 1-based
    assert all(int(i.split(":")[1]) == index - 2 for i, index in result["middle"])
    assert len(result["middle"]) < 60
    assert result["top"] == "n:9999" and result["follow"] is True
    assert result["rowcount"] == "10001"


def test_rows_show_the_tags_scripts_set(mod):
    tags = mod("feedview.js", """async (m) => {
        const { EntryStore } = await import("/js/entries.js");
        const viewport = document.createElement("div");
        viewport.style.cssText = "height: 300px; overflow: auto; position: relative";
        document.body.replaceChildren(viewport);
        const store = new EntryStore();
        store.add([{ id: "n:1", node: "n", ts: 1, protocol: "http", src: { ip: "10.0.0.1", port: 1 },
                     dst: { ip: "10.0.0.2", port: 80 }, summary: "GET /pay", status: 503, response: { status: 503 },
                     elapsed_ms: 3, size: {}, tags: ["test.fail", "slo-breach"] }]);
        const feed = new m.FeedView({ viewport, store, emptyText: () => "" });
        feed.changed({ added: 1 });
        feed.draw();
        const row = viewport.querySelector(".feed-spacer .feed-row");
        return { tags: [...row.querySelectorAll(".tag")].map((t) => t.textContent),
                 status: row.querySelector(".c-status").className, summary: row.querySelector(".summary-text").textContent };
    }""")
    assert tags == {"tags": ["test.fail", "slo-breach"], "status": "c-status st-error", "summary": "GET /pay"}


def test_a_row_already_drawn_takes_the_tags_a_script_set_later(mod):
    """`event: tags` from the hub: the store replaces the row, the view redraws it."""
    result = mod("feedview.js", """async (m) => {
        const { EntryStore } = await import("/js/entries.js");
        const viewport = document.createElement("div");
        viewport.style.cssText = "height: 300px; overflow: auto; position: relative";
        document.body.replaceChildren(viewport);
        const store = new EntryStore();
        store.add([{ id: "n:1", node: "n", ts: 1, protocol: "http", src: { ip: "10.0.0.1", port: 1 },
                     dst: { ip: "10.0.0.2", port: 80 }, summary: "GET /pay", status: 503, response: { status: 503 },
                     elapsed_ms: 3, size: {} }]);
        const feed = new m.FeedView({ viewport, store, emptyText: () => "" });
        feed.changed({ added: 1 });
        feed.draw();
        const tagsOf = () => [...viewport.querySelectorAll(".feed-spacer .feed-row .tag")].map((t) => t.textContent);
        const before = tagsOf();
        const known = store.setTags("n:1", ["test.fail"]);
        const unknown = store.setTags("n:2", ["test.fail"]);
        feed.draw();
        return { before, known, unknown, after: tagsOf() };
    }""")
    assert result == {"before": [], "known": True, "unknown": False, "after": ["test.fail"]}
