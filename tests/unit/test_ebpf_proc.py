"""What the eBPF source reads from /proc: a socket's connection (the fallback for connections
the probes did not see being made) and the libssl files processes map."""

from __future__ import annotations

import os
import socket
import ssl  # noqa: F401  - maps libssl into this process, which the scanner must then find

import pytest

from worker.sources.ebpf.libraries import (EXECUTABLE, LIBSSL, Found, LibraryFile, LibraryScanner,
                                           libssl_paths)
from worker.sources.ebpf.sockets import (SocketTableError, connection_from_table,
                                         parse_socket_table, resolve_fd, socket_inode)

TCP4 = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1111 1 0000000000000000 100 0 0 10 0
   1: 0100007F:9C40 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 2222 1 0000000000000000 20 4 30 10 -1
   2: 0100007F:1F90 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 3333 1 0000000000000000 20 4 30 10 -1
"""
TCP6 = """\
  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:01BB 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4444 1 0000000000000000 100 0 0 10 0
   1: 0000000000000000FFFF00000200000A:01BB 0000000000000000FFFF00000100000A:C350 01 00000000:00000000 00:00000000 00000000     0        0 5555 1 0000000000000000 20 4 30 10 -1
   2: 000080FD000000000000000001000000:D431 000080FD000000000000000002000000:20FB 01 00000000:00000000 00:00000000 00000000     0        0 6666 1 0000000000000000 20 4 30 10 -1
"""
LOCALHOST = bytes([127, 0, 0, 1])


def test_socket_tables_parse_in_host_byte_order():
    sockets = parse_socket_table(TCP4)
    assert [(s.local, s.local_port, s.remote, s.remote_port, s.state, s.inode) for s in sockets] == [
        (LOCALHOST, 8080, bytes(4), 0, 0x0A, 1111),
        (LOCALHOST, 40000, LOCALHOST, 8080, 0x01, 2222),
        (LOCALHOST, 8080, LOCALHOST, 40000, 0x01, 3333),
    ]
    v6 = parse_socket_table(TCP6)
    assert v6[1].local == bytes([10, 0, 0, 2]) and v6[1].remote_port == 50000   # v4-mapped
    assert v6[2].local == bytes.fromhex("fd800000000000000000000000000001")
    assert v6[2].remote == bytes.fromhex("fd800000000000000000000000000002")


def test_roles_come_from_the_listening_sockets():
    sockets = parse_socket_table(TCP4) + parse_socket_table(TCP6)
    assert connection_from_table(sockets, 2222) == ((LOCALHOST, 40000, LOCALHOST, 8080), True)
    assert connection_from_table(sockets, 3333) == ((LOCALHOST, 40000, LOCALHOST, 8080), False)
    # accepted by a [::]:443 listener, from a v4 client
    assert connection_from_table(sockets, 5555) == (
        (bytes([10, 0, 0, 1]), 50000, bytes([10, 0, 0, 2]), 443), False)
    assert connection_from_table(sockets, 1111) is None     # a listener has no connection
    assert connection_from_table(sockets, 9999) is None


@pytest.mark.parametrize(("text", "message"), [
    ("header\n 0: 0100007F:1F90\n", "line 2: 2 fields, expected at least 10"),
    ("header\n 0: 7F:1F90 00000000:0000 0A 0:0 0:0 0 0 0 1\n", "line 2: address '7F:1F90' is not HEX:PORT"),
    ("header\n 0: 0100007X:1F90 00000000:0000 0A 0:0 0:0 0 0 0 1\n", "is not hexadecimal"),
    ("header\n 0: 0100007F:1F90 00000000:0000 ZZ 0:0 0:0 0 0 0 1\n", "state 'ZZ' or inode '1' is not a number"),
])
def test_damaged_tables_name_the_line(text, message):
    with pytest.raises(SocketTableError, match=message):
        parse_socket_table(text)


def test_fd_links_name_socket_inodes():
    assert socket_inode("socket:[12345]") == 12345
    assert socket_inode("pipe:[12345]") is None
    assert socket_inode("/dev/null") is None


def test_a_live_connection_resolves_from_both_ends():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        client = socket.create_connection(listener.getsockname())
        accepted, _ = listener.accept()
        with client, accepted:
            client_port, server_port = client.getsockname()[1], listener.getsockname()[1]
            expected = (LOCALHOST, client_port, LOCALHOST, server_port)
            assert resolve_fd(os.getpid(), client.fileno()) == (expected, True)
            assert resolve_fd(os.getpid(), accepted.fileno()) == (expected, False)
            assert resolve_fd(os.getpid(), listener.fileno()) is None
    read_end, write_end = os.pipe()
    try:
        assert resolve_fd(os.getpid(), read_end) is None
    finally:
        os.close(read_end)
        os.close(write_end)
    assert resolve_fd(os.getpid(), 99999) is None


# -- libraries -------------------------------------------------------------------------------

MAPS = """\
7f1c2a000000-7f1c2a020000 r--p 00000000 fe:01 1311 /usr/lib/x86_64-linux-gnu/libssl.so.3
7f1c2a020000-7f1c2a07a000 r-xp 00020000 fe:01 1311 /usr/lib/x86_64-linux-gnu/libssl.so.3
7f1c2b000000-7f1c2b020000 r-xp 00000000 fe:01 1400 /opt/app/lib/libssl.so.1.1
7f1c2c000000-7f1c2c020000 r-xp 00000000 fe:01 1500 /usr/lib/x86_64-linux-gnu/libssl3.so
7f1c2d000000-7f1c2d020000 r-xp 00000000 fe:01 1600 /usr/lib/x86_64-linux-gnu/libssl.so.3 (deleted)
7f1c2e000000-7f1c2e020000 r-xp 00000000 fe:01 1700 /usr/lib/libsslcommon.so
7ffd0000000-7ffd0021000 rw-p 00000000 00:00 0                          [stack]
"""


def test_maps_name_libssl_but_not_nss_or_deleted_files():
    assert libssl_paths(MAPS) == {"/usr/lib/x86_64-linux-gnu/libssl.so.3", "/opt/app/lib/libssl.so.1.1"}
    assert libssl_paths("") == set()


def test_the_scanner_finds_the_libssl_this_process_maps():
    scanner = LibraryScanner()
    found = scanner.scan(now=0.0)
    with open(f"/proc/{os.getpid()}/maps", encoding="utf-8") as maps:
        ours = libssl_paths(maps.read())
    assert ours, "importing ssl maps libssl"
    path = next(iter(ours))
    status = os.stat(path)
    library = LibraryFile(status.st_dev, status.st_ino)
    assert found[library] == Found(path, LIBSSL)   # our mount namespace: the plain path
    assert scanner.processes_mapping({library}) >= 1
    # and the executable this process runs
    exe = os.stat(f"/proc/{os.getpid()}/exe")
    executable = LibraryFile(exe.st_dev, exe.st_ino)
    assert found[executable] == Found(os.path.realpath(f"/proc/{os.getpid()}/exe"), EXECUTABLE)
    assert scanner.processes_mapping({executable}) >= 1
    # Known files are not reported again; a later scan of new processes only is cheap.
    assert library not in scanner.scan(now=1.0)


def test_processes_that_are_gone_are_forgotten(tmp_path):
    proc = tmp_path / "proc"
    (proc / "42").mkdir(parents=True)
    lib = tmp_path / "libssl.so.3"
    lib.write_bytes(b"")
    (proc / "42" / "root").symlink_to("/")
    (proc / "42" / "maps").write_text(f"00-01 r-xp 0 0:0 1 {lib}\n")
    app = tmp_path / "app"
    app.write_bytes(b"")
    (proc / "42" / "exe").symlink_to(app)
    scanner = LibraryScanner(str(proc))
    found = scanner.scan(now=0.0)
    assert sorted(found.values()) == [Found(str(app), EXECUTABLE), Found(str(lib), LIBSSL)]
    assert scanner.processes_mapping(set(found)) == 1
    (proc / "42" / "maps").unlink()
    (proc / "42" / "root").unlink()
    (proc / "42" / "exe").unlink()
    (proc / "42").rmdir()
    scanner.scan(now=100.0)
    assert scanner.processes_mapping(set(found)) == 0
