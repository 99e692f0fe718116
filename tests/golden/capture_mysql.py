"""Regenerate tests/golden/mysql/*.pcap: pymysql against the MariaDB on 127.0.0.1:3306.

    .venv/bin/python tests/golden/capture_mysql.py      (as root; then UPDATE_GOLDEN=1 tests)

pymysql has no server-side prepared statements: after its real handshake, the script writes
COM_STMT_PREPARE / COM_STMT_EXECUTE / COM_STMT_CLOSE packets through pymysql's own connection
and reads the server's real answers. The server runs without SSL (the SSL request is
hand-made in the unit tests).
"""

from __future__ import annotations

import struct
import sys
from contextlib import AbstractContextManager
from pathlib import Path

import pymysql
from pymysql.constants import CLIENT, COMMAND

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from support.golden import GOLDEN, Scenario, fixed, record_all  # noqa: E402


def read_result(conn: pymysql.connections.Connection) -> None:
    """Reads one response to a raw command: OK/ERR, or a result set up to its last EOF."""
    first = conn._read_packet()
    if first.is_ok_packet() or first.is_error_packet():
        return
    columns = first.read_length_encoded_integer()
    for _ in range(columns):
        conn._read_packet()
    conn._read_packet()                      # EOF after the column definitions
    while not conn._read_packet().is_eof_packet():
        pass


def prepared(conn: pymysql.connections.Connection) -> None:
    conn._execute_command(COMMAND.COM_STMT_PREPARE, "SELECT id, item FROM orders WHERE qty > ?")
    ok = conn._read_packet()
    sid, ncols, nparams = struct.unpack_from("<IHH", ok.get_all_data(), 1)
    for _ in range(nparams):
        conn._read_packet()
    if nparams:
        conn._read_packet()
    for _ in range(ncols):
        conn._read_packet()
    if ncols:
        conn._read_packet()
    for qty in (1, 4):
        # statement id, no cursor, 1 iteration, null bitmap, new params bound, LONGLONG
        payload = struct.pack("<IBIBBHq", sid, 0, 1, 0, 1, 0x08, qty)
        conn._execute_command(COMMAND.COM_STMT_EXECUTE, payload)
        read_result(conn)
    conn._execute_command(COMMAND.COM_STMT_CLOSE, struct.pack("<I", sid))


def session() -> None:
    conn = pymysql.connect(host="127.0.0.1", port=3306, user="root", password="",
                           database="test", client_flag=CLIENT.MULTI_STATEMENTS)
    with conn.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS orders")
        cur.execute("CREATE TABLE orders (id INT AUTO_INCREMENT PRIMARY KEY, "
                    "item VARCHAR(20) UNIQUE, qty INT)")
        cur.execute("INSERT INTO orders (item, qty) VALUES ('apple', 3), ('pear', 5)")
        cur.execute("INSERT INTO orders (item, qty) VALUES (%s, %s)", ("plum", 7))
        cur.execute("SELECT * FROM orders WHERE qty > %s", (2,))
        cur.fetchall()
        try:
            cur.execute("SELECT * FROM no_such_table")
        except pymysql.MySQLError:
            pass
        cur.execute("SELECT 1 AS one; UPDATE orders SET qty = qty + 1")
        while cur.nextset():
            pass
    conn.ping(reconnect=False)
    conn.select_db("test")
    prepared(conn)
    with conn.cursor() as cur:
        cur.execute("DROP TABLE orders")
    conn.close()


def scenarios() -> AbstractContextManager[list[Scenario]]:
    return fixed(Scenario(GOLDEN / "mysql" / "session.pcap", "tcp port 3306", session))


if __name__ == "__main__":
    record_all(scenarios)
