"""Regenerate tests/golden/postgres/*.pcap: psycopg 3 against the PostgreSQL on 127.0.0.1:5432.

    .venv/bin/python tests/golden/capture_postgres.py      (as root; then UPDATE_GOLDEN=1 tests)

The server runs without SSL: sslmode=prefer sends an SSLRequest answered 'N' and goes on in
plaintext; sslmode=require gets the same 'N' and gives up. The 'S' answer is hand-made in the
unit tests.
"""

from __future__ import annotations

import sys
from contextlib import AbstractContextManager
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from support.golden import GOLDEN, Scenario, fixed, record_all  # noqa: E402

DSN = "host=127.0.0.1 port=5432 dbname=test user=postgres application_name=golden"


def session() -> None:
    with psycopg.connect(DSN + " sslmode=disable", autocommit=True) as conn:
        conn.execute("CREATE TEMP TABLE orders (id serial PRIMARY KEY, item text UNIQUE, "
                     "qty int NOT NULL)")
        conn.execute("INSERT INTO orders (item, qty) VALUES ('apple', 3), ('pear', 5)")
        conn.execute("SELECT * FROM orders").fetchall()
        conn.execute("SELECT * FROM orders WHERE id = %s", (1,)).fetchall()
        conn.execute("INSERT INTO orders (item, qty) VALUES (%s, %s)", ("plum", 7))
        for n in range(4):   # prepared from the second execution on (prepare_threshold)
            conn.execute("SELECT item, qty FROM orders WHERE qty > %s", (n,), prepare=True)
        for query, params in (("SELEC 1", None), ("INSERT INTO orders (item, qty) VALUES (%s, %s)",
                                                  ("apple", 1))):
            try:
                conn.execute(query, params)
            except psycopg.Error:
                pass
        conn.execute("DO $$ BEGIN RAISE NOTICE 'stock is low'; END $$")
        conn.execute("LISTEN stock")
        conn.execute("NOTIFY stock, 'apple'")
        conn.execute("UPDATE orders SET qty = qty + 1; DELETE FROM orders WHERE item = 'pear'")
        with conn.pipeline():
            conn.execute("INSERT INTO orders (item, qty) VALUES (%s, %s)", ("fig", 2))
            conn.execute("SELECT count(*) FROM orders WHERE qty >= %s", (2,))
            conn.execute("UPDATE orders SET qty = %s WHERE item = %s", (9, "fig"))


def ssl_negotiation() -> None:
    with psycopg.connect(DSN + " sslmode=prefer", autocommit=True) as conn:
        conn.execute("SELECT 1")
    try:
        psycopg.connect(DSN + " sslmode=require").close()
    except psycopg.OperationalError:
        pass


def scenarios() -> AbstractContextManager[list[Scenario]]:
    return fixed(Scenario(GOLDEN / "postgres" / "session.pcap", "tcp port 5432", session),
                 Scenario(GOLDEN / "postgres" / "ssl.pcap", "tcp port 5432", ssl_negotiation))


if __name__ == "__main__":
    record_all(scenarios)
