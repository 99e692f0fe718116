"""One script in its quickjs context: hooks, every helper (right and wrong calls), and the
limits: a runaway loop, a memory bomb, a stack overflow, a syntax error with line and column."""

from __future__ import annotations

import json
from typing import Any

import pytest

from factories import API, FRONTEND, tentry_json
from hub.scripts.runtime import Limits, ScriptRuntime
from hub.scripts.syntax import locate

LIMITS = Limits(time_s=0.3, memory_bytes=16 * 1024 * 1024)


def entry(number: int = 42, status: int = 200, path: str = "/api/orders", tags: list[str] | None = None) -> dict[str, Any]:
    return tentry_json(
        id=f"node-a:{number}", node="node-a", ts=1764150000.5, src=FRONTEND, dst=API,
        summary=f"GET {path}", elapsed_ms=3.5, status=status, tags=tags or [],
        request={"method": "GET", "path": path, "headers": {"host": "api", "user-agent": "curl/8"}},
        response={"status": status, "reason": "OK", "headers": {"content-type": "application/json"}})


def load(code: str, env: dict[str, str] | None = None, limits: Limits = LIMITS) -> ScriptRuntime:
    runtime = ScriptRuntime("demo", code, env or {}, limits)
    outcome = runtime.load()
    assert outcome.failure is None, outcome.failure
    return runtime


def captured(runtime: ScriptRuntime, item: dict[str, Any]):  # noqa: ANN201
    return runtime.call("onItemCaptured", json.dumps([item]))


def test_hooks_are_found_and_a_quiet_call_reports_nothing() -> None:
    runtime = load("var seen = 0;\nfunction onItemCaptured(e) { seen++; }\nfunction onHubAction(a, d) {}")
    assert runtime.hooks == {"onItemCaptured", "onHubAction"}
    outcome = captured(runtime, entry())
    assert outcome.failure is None and outcome.actions == [] and outcome.dropped == 0
    # a hook the script lacks is no call at all
    assert runtime.call("onItemQueried", "[{}]").actions == []


def test_console_and_tags() -> None:
    runtime = load("""
        function onItemCaptured(e) {
            console.log("status", e.status, {path: e.request.path});
            if (e.status >= 500) { test.fail(e); } else { test.pass(e); }
            test.tag(e, "seen-by/demo");
            console.error("tags now", e.tags);
        }""")
    outcome = captured(runtime, entry(status=503, tags=["test.pass", "old"]))
    assert outcome.failure is None
    assert outcome.actions == [
        {"t": "log", "level": "info", "text": 'status 503 {"path":"/api/orders"}'},
        {"t": "tag", "id": "node-a:42", "add": ["test.fail"], "remove": ["test.pass"]},
        {"t": "tag", "id": "node-a:42", "add": ["seen-by/demo"], "remove": []},
        {"t": "log", "level": "error", "text": 'tags now ["old","test.fail","seen-by/demo"]'},
    ]


def test_kfl_helpers_answer_inside_a_hook() -> None:
    runtime = load("""
        function onItemCaptured(e) {
            console.log(kfl.match('http and status >= 500', e), kfl.match('request.path.startsWith("/api")', e),
                        kfl.validate('http and'), JSON.stringify(kfl.check('http and')));
        }""")
    outcome = captured(runtime, entry(status=502))
    assert outcome.actions[0]["text"] == ('true true false {"valid":false,"error":"column 9: expected an '
                                          "expression after 'and', got end of query\",\"column\":9}")


def test_vendor_pcap_hub_and_env() -> None:
    runtime = load("""
        function onItemCaptured(e) {
            vendor.webhook("post", env.HOOK, {id: e.id, status: e.status});
            vendor.webhook("PUT", env.HOOK, "plain text");
            vendor.slack("https://hooks.slack.com/services/T/B/X", "5xx on " + e.request.path);
            console.log(pcap.snapshot("http and status >= 500"));
            hub.action("count", {n: 1});
            env.HOOK = "changed";   // env is read-only: ignored outside strict mode
        }""", env={"HOOK": "http://127.0.0.1:9/hook"})
    actions = captured(runtime, entry(status=500)).actions
    assert actions[0] == {"t": "webhook", "method": "POST", "url": "http://127.0.0.1:9/hook",
                          "body": '{"id":"node-a:42","status":500}', "type": "application/json"}
    assert actions[1]["body"] == "plain text" and actions[1]["type"].startswith("text/plain")
    assert actions[2] == {"t": "slack", "url": "https://hooks.slack.com/services/T/B/X", "text": "5xx on /api/orders"}
    snapshot = actions[3]
    assert snapshot["t"] == "snapshot" and snapshot["query"] == "http and status >= 500"
    assert actions[4]["text"] == snapshot["name"] and snapshot["name"].startswith("demo-") and snapshot["name"].endswith("-1.pcap")
    assert actions[5] == {"t": "action", "action": "count", "data": '{"n":1}'}
    assert captured(runtime, entry()).actions[0]["url"] == "http://127.0.0.1:9/hook"


@pytest.mark.parametrize(("call", "message"), [
    ("test.fail()", "test.fail: expected one argument (the entry), got 0"),
    ("test.pass({id: 7})", "test.pass: expected an entry (an object with an id like \"node-a:42\"), got an object"),
    ("test.tag(e, '')", "test.tag: a tag is 1-64 letters"),
    ("kfl.match('http and', e)", "kfl.match: invalid KFL query: column 9: expected an expression"),
    ("kfl.match(42, e)", "kfl.match: expected a KFL query (a string), got number 42"),
    ("kfl.match('http')", "kfl.match: expected two arguments"),
    ("vendor.webhook('FETCH', 'http://x/')", "vendor.webhook: method: expected one of GET, POST, PUT, PATCH, DELETE"),
    ("vendor.webhook('POST', 'ftp://x/')", "vendor.webhook: expected an http:// or https:// URL, got string ftp://x/"),
    ("vendor.slack('https://hooks.slack.com/x')", "vendor.slack: expected two arguments"),
    ("vendor.slack('https://hooks.slack.com/x', {t: 1})", "vendor.slack: text: expected a string, got an object"),
    ("pcap.snapshot('status ==')", "pcap.snapshot: invalid KFL query: column 10"),
    ("jobs.schedule('j', '* * *', function () {})", "jobs.schedule: cron: expected 5 fields"),
    ("jobs.schedule('j', '* * * * *', 'not a function')", "jobs.schedule: expected a function to run"),
    ("jobs.run('nope')", "jobs.run: no job named \"nope\""),
    ("hub.action()", "hub.action: expected an action name"),
])
def test_a_helper_called_wrongly_fails_the_call_with_a_clear_message(call: str, message: str) -> None:
    runtime = load(f"function onItemCaptured(e) {{ console.log('before'); {call}; console.log('after'); }}")
    outcome = captured(runtime, entry())
    assert outcome.failure is not None and outcome.failure.kind == "error"
    assert message in outcome.failure.message, outcome.failure.message
    assert outcome.actions == [{"t": "log", "level": "info", "text": "before"}]   # queued before: kept
    # the script can catch it, as any JS exception
    runtime = load(f"function onItemCaptured(e) {{ try {{ {call}; }} catch (x) {{ console.log(x.name); }} }}")
    caught = captured(runtime, entry())
    assert caught.failure is None and caught.actions[0]["text"] in ("TypeError", "SyntaxError")


def test_jobs_schedule_list_run_and_remove() -> None:
    runtime = load("""
        var runs = 0;
        jobs.schedule("tick", "*/5 * * * *", function () { runs++; console.log("tick", runs); });
        function onHubAction(action) {
            if (action === "run") console.log("ran", jobs.run("tick"), JSON.stringify(jobs.list()));
            if (action === "remove") console.log(jobs.remove("tick"), jobs.remove("tick"));
        }""")
    assert runtime.job("tick").actions == [{"t": "log", "level": "info", "text": "tick 1"}]
    actions = runtime.call("onHubAction", '["run", null]').actions
    assert actions[0]["text"] == "tick 2"
    assert actions[1]["text"] == 'ran undefined [{"name":"tick","cron":"*/5 * * * *"}]'
    actions = runtime.call("onHubAction", '["remove", null]').actions
    assert actions == [{"t": "job", "op": "remove", "name": "tick"}, {"t": "log", "level": "info", "text": "true false"}]
    assert runtime.job("tick").actions == []   # gone


def test_the_top_level_reports_its_actions_at_load() -> None:
    runtime = ScriptRuntime("demo", "console.log('hello'); jobs.schedule('a', '0 * * * *', function(){});", {}, LIMITS)
    outcome = runtime.load()
    assert outcome.failure is None
    assert outcome.actions == [{"t": "log", "level": "info", "text": "hello"},
                               {"t": "job", "op": "schedule", "name": "a", "cron": "0 * * * *"}]


def test_a_runaway_loop_is_stopped_and_the_context_stays_usable() -> None:
    runtime = load("var calls = 0;\nfunction onItemCaptured(e) { calls++; if (e.status >= 500) { while (true) {} } console.log(calls); }")
    stopped = captured(runtime, entry(status=500))
    assert stopped.failure is not None and stopped.failure.kind == "timeout"
    assert "time limit (0.3s of CPU)" in stopped.failure.describe(LIMITS)
    assert not stopped.recreated
    after = captured(runtime, entry())
    assert after.failure is None and after.actions[0]["text"] == "2"   # same context, state kept


def test_a_loop_that_catches_everything_is_still_stopped() -> None:
    runtime = load("function onItemCaptured(e) { for (;;) { try { while (true) {} } catch (x) {} } }")
    assert captured(runtime, entry()).failure.kind == "timeout"


def test_a_memory_bomb_is_stopped_and_the_context_rebuilt() -> None:
    runtime = load("""
        var kept = [], calls = 0;
        function onItemCaptured(e) {
            calls++;
            if (e.status >= 500) { while (true) { kept.push(new Array(10000).join("x") + kept.length); } }
            console.log("calls", calls);
        }""")
    assert captured(runtime, entry()).actions[0]["text"] == "calls 1"
    bomb = captured(runtime, entry(status=500))
    assert bomb.failure is not None and bomb.failure.kind == "memory"
    assert "memory limit (16 MiB)" in bomb.failure.describe(LIMITS)
    assert bomb.recreated and runtime.loaded
    after = captured(runtime, entry())
    assert after.failure is None and after.actions[0]["text"] == "calls 1"   # a fresh context
    assert runtime.memory_used() < 2 * 1024 * 1024


def test_deep_recursion_is_a_stack_overflow() -> None:
    runtime = load("function down(n) { return down(n + 1) + 1; }\nfunction onItemCaptured(e) { down(0); }")
    outcome = captured(runtime, entry())
    assert outcome.failure is not None and outcome.failure.kind == "stack"
    assert captured(runtime, entry()).failure.kind == "stack"   # and again: nothing broken


def test_errors_at_load() -> None:
    for code, kind in [("var x = 1;\nvar y = ;", "syntax"), ("throw new Error('no');", "error"),
                       ("while (true) {}", "timeout"), ("var a = []; for (;;) a.push(new Array(100000).join('y'));", "memory")]:
        runtime = ScriptRuntime("demo", code, {}, LIMITS)
        outcome = runtime.load()
        assert outcome.failure is not None and outcome.failure.kind == kind, (code, outcome.failure)
        assert not runtime.loaded
        assert runtime.call("onItemCaptured", "[{}]").failure.message == "the script is not loaded"


@pytest.mark.parametrize(("code", "line", "column"), [
    ("var x = 1;\nvar y = ;", 2, 9),
    ("function onItemCaptured(e) {\n  if (e.status > 500 {\n    test.fail(e);\n  }\n}", 2, 22),
    ("var s = 'unterminated;\n", 1, 9),
    ("\n\n  foo bar", 3, 7),
])
def test_syntax_errors_have_line_and_column(code: str, line: int, column: int) -> None:
    failure = ScriptRuntime("demo", code, {}, LIMITS).load().failure
    assert failure is not None and failure.kind == "syntax" and failure.line == line
    problem = locate(code, failure.message, failure.line)
    assert (problem.line, problem.column) == (line, column)
    assert str(problem).startswith(f"line {line}, column {column}: SyntaxError: ")


def test_a_syntax_esprima_does_not_know_keeps_the_line() -> None:
    code = "var a = {b: 1};\nvar c = a?.b;\nvar d = ;"   # optional chaining: quickjs yes, esprima 4 no
    failure = ScriptRuntime("demo", code, {}, LIMITS).load().failure
    assert failure is not None and failure.line == 3
    problem = locate(code, failure.message, failure.line)
    assert problem.line == 3 and problem.column is None and str(problem).startswith("line 3: ")


def test_too_many_helper_calls_are_dropped_and_counted() -> None:
    runtime = load("function onItemCaptured(e) { for (var i = 0; i < 1500; i++) console.log(i); }")
    outcome = captured(runtime, entry())
    assert len(outcome.actions) == 1000 and outcome.dropped == 500


def test_on_item_queried_returns_the_entry_as_left() -> None:
    runtime = load("""
        function onItemQueried(e) {
            if (e.status >= 500) test.fail(e);
            e.summary = e.summary + " (checked)";
        }""")
    outcome = runtime.query(json.dumps(entry(status=500)))
    result = json.loads(outcome.result)
    assert result["tags"] == ["test.fail"] and result["summary"] == "GET /api/orders (checked)"
    assert outcome.actions[0]["t"] == "tag"
    # returning another object with the same id replaces it; any other return value does not
    swap = load("function onItemQueried(e) { return e.status >= 500 ? {id: e.id, summary: 'x'} : {id: 'other:1'}; }")
    assert json.loads(swap.query(json.dumps(entry(status=500))).result) == {"id": "node-a:42", "summary": "x"}
    assert json.loads(swap.query(json.dumps(entry())).result)["summary"] == "GET /api/orders"


def test_the_internals_cannot_be_replaced_by_a_script() -> None:
    runtime = load("__shark = null; __kfl = null;\nfunction onItemCaptured(e) { console.log(kfl.match('http', e)); }")
    assert captured(runtime, entry()).actions[0]["text"] == "true"


def test_a_script_replacing_json_changes_its_own_json_not_what_the_hub_gets() -> None:
    runtime = load("""
        JSON.stringify = function () { return "not json"; };
        JSON.parse = function () { return [{id: "forged:1"}]; };
        function onItemCaptured(e) { console.log("saw", e.id); pcap.snapshot("http"); }""")
    outcome = captured(runtime, entry())
    assert outcome.failure is None
    assert outcome.actions[0] == {"t": "log", "level": "info", "text": "saw node-a:42"}
    assert outcome.actions[1]["t"] == "snapshot" and outcome.actions[1]["name"].startswith("demo-")


# A prototype's toJSON is consulted by every JSON.stringify, the helpers' too: it can forge the
# answer. This one replaces the first object it is asked for (the answer) once.
FORGE = """
    var forged = false;
    Object.prototype.toJSON = function () {
        if (forged) return this;
        forged = true;
        return %s;
    };"""


@pytest.mark.parametrize("answer, where", [
    ('{actions: [{t: "snapshot", query: "", name: "../../../tmp/escape.pcap"}], dropped: 0}', "$.actions[0].name"),
    ('{actions: [{t: "snapshot", query: "", name: "other-20261206T101010-1.pcap"}], dropped: 0}', "script's own name"),
    ('{actions: [{t: "log", level: "info", text: "x", source: "hub"}], dropped: 0}', "source"),
    ('{actions: [{t: "webhook", method: "TRACE", url: "http://127.0.0.1/", body: "", type: ""}], dropped: 0}',
     "$.actions[0].method"),
    ('{actions: [{t: "tag", id: "node-a:1", add: ["bad tag!"], remove: []}], dropped: 0}', "$.actions[0].add[0]"),
    ('{actions: [{t: "job", op: "schedule", name: "j"}], dropped: 0}', "cron"),
    ('{actions: [{t: "shell", command: "rm -rf /"}], dropped: 0}', "$.actions[0]"),
    ('{actions: [], dropped: -5}', "$.dropped"),
])
def test_a_forged_answer_is_the_calls_failure_and_nothing_of_it_is_done(answer: str, where: str) -> None:
    runtime = load(FORGE % answer + "\nfunction onItemCaptured(e) { console.log('hi'); }")
    outcome = captured(runtime, entry())
    assert outcome.failure is not None and outcome.failure.kind == "error"
    assert "not what they make" in outcome.failure.message and where in outcome.failure.message
    assert outcome.actions == [] and outcome.dropped == 0


def test_a_queried_entry_that_is_not_the_entry_is_the_calls_failure() -> None:
    runtime = load(FORGE % "5" + "\nfunction onItemQueried(e) { e.summary = 'changed'; }")
    outcome = runtime.query(json.dumps(entry()))
    assert outcome.failure is not None
    assert outcome.failure.message.startswith("onItemQueried: ") and "not entry node-a:42" in outcome.failure.message
    assert outcome.result is None


def test_a_hook_that_is_a_runaway_getter_fails_the_load() -> None:
    runtime = ScriptRuntime("demo", "Object.defineProperty(globalThis, 'onItemCaptured', {get: function () { while (true) {} }});",
                            {}, LIMITS)
    outcome = runtime.load()
    assert outcome.failure is not None and outcome.failure.kind == "timeout" and not runtime.loaded
