"""The store is its owner's alone: files 0600 in 0700 directories, whatever the umask."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from factories import LINKTYPE_ETHERNET, tcp_packet
from test_store_index import make_row
from worker.options import OptionError, check_storage_dir
from worker.store.index import open_index
from worker.store.segments import MIN_STORAGE_LIMIT, SegmentWriter, StoreError


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def loose_umask():
    old = os.umask(0o022)           # what a shell gives: files 0644 unless the code says otherwise
    yield
    os.umask(old)


def test_segments_lock_index_and_wal_are_created_private(tmp_path, loose_umask):
    store = tmp_path / "store"
    with SegmentWriter(store, MIN_STORAGE_LIMIT) as writer:
        writer.append(LINKTYPE_ETHERNET, [(1_700_000_000_000_000_000, tcp_packet(payload=b"pw"), 60)])
    index, _note = open_index(store / "index.sqlite")
    index.add([make_row(1)], (1, 100))
    files = [store / "index.sqlite", store / "index.sqlite-wal", store / "index.sqlite-shm",
             store / "pcap" / ".lock", *(store / "pcap").glob("*.pcap")]
    assert len(files) == 5 and all(path.exists() for path in files)
    assert {str(path.relative_to(store)): mode(path) for path in files} == \
        {str(path.relative_to(store)): 0o600 for path in files}
    assert mode(store) == mode(store / "pcap") == 0o700
    index.close()


def test_an_older_store_is_tightened_at_start_without_following_links(tmp_path, loose_umask):
    store, outside = tmp_path / "store", tmp_path / "usr-src-header.h"
    (store / "pcap").mkdir(parents=True)
    (store / "headers").mkdir()
    for path in (store / "index.sqlite", store / "pcap" / "000000000001.pcap", outside,
                 store / "headers" / "kconfig.h"):
        path.write_bytes(b"x")
        path.chmod(0o644)
    (store / "linked.h").symlink_to(outside)
    store.chmod(0o755)
    check_storage_dir(store)
    assert mode(store) == mode(store / "pcap") == 0o700
    assert mode(store / "index.sqlite") == mode(store / "pcap" / "000000000001.pcap") == 0o600
    assert mode(outside) == 0o644                           # a symlink's target is not ours
    assert mode(store / "headers" / "kconfig.h") == 0o644   # nor what lives in other directories


@pytest.mark.root
def test_a_file_that_cannot_be_tightened_is_a_note_not_a_failure(tmp_path, loose_umask):
    store = tmp_path / "store"
    store.mkdir()
    stuck = store / "index.sqlite"
    stuck.write_bytes(b"x")
    stuck.chmod(0o644)
    # nobody's: root cannot chmod it without CAP_FOWNER, which a worker with NET_RAW alone lacks
    os.chown(stuck, 65534, 65534)
    code = ("import sys; from pathlib import Path; from worker.options import check_storage_dir; "
            "print(check_storage_dir(Path(sys.argv[1])))")
    done = subprocess.run(["setpriv", "--inh-caps=-all", "--bounding-set=-all", sys.executable, "-c", code,
                           str(store)], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr
    assert f"{stuck} stays mode 644, readable beyond its owner: cannot change it (Operation not permitted)" \
        in done.stdout
    assert mode(store) == 0o700


@pytest.mark.parametrize("shared_mode", [0o1777, 0o777, 0o1755])
def test_a_shared_directory_is_refused_not_tightened(tmp_path, loose_umask, shared_mode):
    # as /tmp and /dev/shm are: tightening one to 0700 locked PostgreSQL out of its shared memory
    shared = tmp_path / "shm"
    shared.mkdir()
    shared.chmod(shared_mode)
    theirs = shared / "PostgreSQL.1234"
    theirs.write_bytes(b"x")
    theirs.chmod(0o644)
    with pytest.raises(OptionError, match=rf"--storage-dir: {shared} is a shared directory "
                                          rf"\(mode {shared_mode:o}\).*e\.g\. {shared / 'shark'}"):
        check_storage_dir(shared)
    with pytest.raises(StoreError, match=rf"index directory {shared}: {shared} is a shared directory"):
        open_index(shared / "index.sqlite")
    assert mode(shared) == shared_mode and mode(theirs) == 0o644
    assert sorted(p.name for p in shared.iterdir()) == ["PostgreSQL.1234"]
    check_storage_dir(shared / "shark")     # a directory of its own inside it is fine
    assert mode(shared / "shark") == 0o700 and mode(shared) == shared_mode
