from __future__ import annotations

from support.golden import GOLDEN, assert_golden, dissect_capture


def test_mysql_session_golden() -> None:
    entries = dissect_capture(GOLDEN / "mysql" / "session.pcap")
    assert all(e["protocol"] == "mysql" for e in entries)
    # status: 0 for OK or a result set, the ERR code for an error
    assert [e["status"] for e in entries if e["status"] != 0 and e["response"]] == [1146]
    assert entries[0]["summary"] == "connect root@test"
    assert entries[0]["response"]["auth_result"] == "ok"
    commands = [e["request"]["command"] for e in entries[1:]]
    assert commands.count("COM_QUERY") == 10
    assert commands[-7:] == ["COM_PING", "COM_INIT_DB", "COM_STMT_PREPARE", "COM_STMT_EXECUTE",
                             "COM_STMT_EXECUTE", "COM_STMT_CLOSE", "COM_QUERY"] or \
        commands[-8:-1] == ["COM_PING", "COM_INIT_DB", "COM_STMT_PREPARE", "COM_STMT_EXECUTE",
                            "COM_STMT_EXECUTE", "COM_STMT_CLOSE", "COM_QUERY"]
    by_summary = {e["summary"]: e for e in entries}
    assert by_summary["SELECT * FROM orders WHERE qty > 2"]["response"]["rows"] == 3
    assert by_summary["SELECT * FROM no_such_table"]["response"]["error"]["code"] == 1146
    executes = [e for e in entries if e["request"]["command"] == "COM_STMT_EXECUTE"]
    assert [e["response"]["rows"] for e in executes] == [3, 2]
    assert executes[0]["summary"] == "SELECT id, item FROM orders WHERE qty > ?"
    assert all(e["complete"] for e in entries)
    assert_golden(GOLDEN / "mysql" / "session.json", entries)
