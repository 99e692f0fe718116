from __future__ import annotations

from support.golden import GOLDEN, assert_golden, dissect_capture


def test_postgres_session_golden() -> None:
    entries = dissect_capture(GOLDEN / "postgres" / "session.pcap")
    assert all(e["protocol"] == "postgres" for e in entries)
    # status: 0 for a reply, 1 for an ErrorResponse (its SQLSTATE in response.error.code)
    assert all(e["status"] == (1 if e["response"].get("error") else 0) for e in entries)
    assert {e["response"]["error"]["code"] for e in entries if e["status"]} == {"42601", "23505"}
    summaries = [e["summary"] for e in entries]
    assert summaries[0] == "startup postgres@test"
    assert entries[0]["response"]["auth_result"] == "ok"
    assert summaries.count("SELECT item, qty FROM orders WHERE qty > $1") == 5   # prepared
    by_summary = {e["summary"]: e for e in entries}
    param = by_summary["SELECT * FROM orders WHERE id = $1"]
    assert param["request"]["kind"] == "extended" and param["request"]["params"] == 1
    assert param["response"]["rows"] == 1
    assert by_summary["SELEC 1"]["response"]["error"]["code"] == "42601"
    unique = [e for e in entries if (e["response"] or {}).get("error")
              and e["response"]["error"]["code"] == "23505"]
    assert len(unique) == 1 and unique[0]["request"]["kind"] == "extended"
    assert by_summary["NOTIFY stock"]["request"]["payload"] == "apple"
    assert by_summary["SELECT count(*) FROM orders WHERE qty >= $1"]["response"]["rows"] == 1
    assert all(e["complete"] for e in entries)
    assert_golden(GOLDEN / "postgres" / "session.json", entries)


def test_postgres_ssl_golden() -> None:
    entries = dissect_capture(GOLDEN / "postgres" / "ssl.pcap")
    assert [e["summary"] for e in entries] == ["startup postgres@test", "SELECT 1",
                                               "SSLRequest refused"]
    assert entries[0]["request"]["encryption"] == "ssl refused"
    assert_golden(GOLDEN / "postgres" / "ssl.json", entries)
