"""The hub's /api/v1/har from real captured traffic validates against the HAR 1.2 JSON Schema
(tests/data/har-1.2.schema.json, written from the HAR 1.2 spec)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from support.processes import wait_for
from test_hub_live import Hub

import jsonschema

pytestmark = pytest.mark.root
SCHEMA = Path(__file__).resolve().parents[1] / "data" / "har-1.2.schema.json"


def test_schema_is_a_valid_draft7_schema():
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    validator = jsonschema.Draft7Validator(schema)
    assert not validator.is_valid({"log": {"version": "1.2", "creator": {"name": "x"}, "entries": []}})
    assert validator.is_valid({"log": {"version": "1.2", "creator": {"name": "x", "version": "1"}, "entries": []}})


def test_hub_har_validates_against_har_1_2(start_worker, http_server):
    worker = start_worker("--iface", "lo", "--bpf", f"tcp port {http_server}", node="alpha")
    hub = Hub(worker.url)
    try:
        base = f"http://127.0.0.1:{http_server}"
        with httpx.Client(timeout=10) as client:
            assert client.get(base + "/json", params={"a": "1", "b": "two words"}).status_code == 200
            assert client.post(base + "/echo", content=b'{"hello": "world"}',
                               headers={"Content-Type": "application/json"}).status_code == 200
            assert client.get(base + "/status/500").status_code == 500
            assert client.get(base + "/plain").status_code == 200

        def har() -> dict | None:
            body = hub.get("/har").json()
            return body if len(body["log"]["entries"]) >= 4 else None
        document = wait_for(har, what="4 entries in the hub's HAR")

        validator = jsonschema.Draft7Validator(json.loads(SCHEMA.read_text()),
                                               format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)
        errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]
        assert not errors, "HAR 1.2 schema violations:\n" + "\n".join(errors)

        entries = document["log"]["entries"]
        by_path = {e["request"]["url"].split("://", 1)[1].split("/", 1)[1].split("?")[0]: e for e in entries}
        assert {"json", "echo", "status/500", "plain"} <= set(by_path)
        query = by_path["json"]["request"]["queryString"]
        assert {"name": "a", "value": "1"} in query and {"name": "b", "value": "two words"} in query
        assert by_path["echo"]["request"]["method"] == "POST"
        assert by_path["echo"]["request"]["bodySize"] == len(b'{"hello": "world"}')
        assert by_path["status/500"]["response"]["status"] == 500
        stamps = [e["startedDateTime"] for e in entries]
        assert stamps == sorted(stamps)
    finally:
        assert hub.stop() == 0, hub.output
