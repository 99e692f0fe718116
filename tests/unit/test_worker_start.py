"""What `python -m worker` loads, and when: the capture child is forked and the shards' fork
server started before the API (uvicorn) and the dissection are imported, eBPF's source
only with --tls, and the API without a web framework (docs/BENCHMARKS.md, "Worker start").
Each check runs in a fresh interpreter, whose modules are what the import statements load."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def loaded_after(code: str) -> set[str]:
    script = f"import json, sys\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


def packages(modules: set[str], *names: str) -> set[str]:
    return {m for m in modules if any(m == name or m.startswith(name + ".") for name in names)}


def test_the_worker_command_loads_neither_the_api_nor_the_dissection_before_its_children_start():
    modules = loaded_after("import worker.__main__")
    assert "worker.capture" in modules and "worker.shard_server" in modules   # what forks first
    assert packages(modules, "litestar", "uvicorn", "worker.api", "worker.dissection",
                    "worker.dissectors", "worker.shard", "worker.sharded", "shark.kfl") == set()


def test_a_shard_imports_nothing_its_fork_server_did_not_when_it_starts_dissecting():
    loaded_after(
        "import importlib\n"
        "from worker.shard_server import PRELOAD\n"
        "for name in PRELOAD: importlib.import_module(name)\n"
        "before = set(sys.modules)\n"
        "from worker.dissection import Dissection\n"
        "Dissection('node-a')   # what a shard makes first: every dissector\n"
        "assert set(sys.modules) == before, sorted(set(sys.modules) - before)\n")


def test_the_capture_path_leaves_ebpf_alone_without_tls(tmp_path: Path):
    capture = ROOT / "tests" / "golden" / "http1" / "basic.pcap"
    modules = loaded_after(
        "from pathlib import Path\n"
        "from worker.capture import _open, _open_tls\n"
        "from worker.options import WorkerOptions\n"
        f"options = WorkerOptions(pcap_file=Path({str(capture)!r}), storage_dir=Path({str(tmp_path)!r}))\n"
        "sources, _ = _open(options)\n"
        "assert _open_tls(options, sources[0])[0] is None\n"
        "import worker.dissection   # dissection needs eBPF's packet marks, not its source\n")
    assert "worker.sources.ebpf.synth" in modules and "worker.sources.ebpf.status" in modules
    assert packages(modules, "worker.sources.ebpf.source", "worker.sources.ebpf.loader") == set()


def test_the_worker_api_makes_its_app_without_a_web_framework():
    # worker/api/asgi.py serves the routes: neither Litestar (the hub's) nor starlette (the
    # first /stream's) nor pydantic loads with the app (docs/BENCHMARKS.md, "Worker start, fifth round").
    modules = loaded_after(
        "from types import SimpleNamespace\n"
        "from worker.api.app import create_app\n"
        "create_app(SimpleNamespace(options=SimpleNamespace(token='t'), capture=None))\n")
    assert packages(modules, "litestar", "starlette", "sse_starlette", "pydantic", "attrs") == set()


def test_the_worker_api_loads_kfl_and_sse_at_their_first_use():
    # KFL's parser (lark) and sse_starlette load with the first query and the first /stream,
    # not before the worker serves (docs/BENCHMARKS.md, "Worker start, third round").
    modules = loaded_after("import worker.api.app, worker.filters\n"
                           "from shark.kfl import KflError\n")
    assert packages(modules, "lark", "shark.kfl.compiler", "shark.kfl.parser", "sse_starlette",
                    "starlette", "websockets") == set()
    modules = loaded_after(
        "from worker.filters import KflError, compile_query\n"
        "assert compile_query('http and response.status == 500').protocols == frozenset({'http'})\n"
        "try:\n    compile_query('x ==')\nexcept KflError as error:\n    assert error.column == 5\n"
        "else:\n    raise AssertionError('no KflError')\n"
        "from shark import kfl\n"
        "assert 'request' in kfl.FIELDS and 'http' in kfl.PROTOCOLS and 'contains' in kfl.HELPERS\n")
    assert "lark" in modules and "shark.kfl.compiler" in modules


def test_the_shards_fork_server_is_forked_from_the_worker_and_keeps_none_of_its_descriptors():
    # `python -m worker` forks the server (worker.shard_server.start_shard_server) instead of
    # starting an interpreter that imports everything again; a shard started through it runs,
    # and neither holds a descriptor the worker had (its API socket, the capture child's pipes).
    loaded_after(
        "import os, select, multiprocessing.forkserver as forkserver\n"
        "from worker.shard_server import SERVER_NAME, shard_context, start_shard_server\n"
        "read, write = os.pipe()   # stands for the worker's descriptors\n"
        "start_shard_server()\n"
        "shard = shard_context().Process(target=sys.exit, args=(7,))\n"
        "shard.start()   # returns once the server has forked it\n"
        "shard.join(60)\n"
        "assert shard.exitcode == 7, shard.exitcode\n"
        "server = forkserver._forkserver._forkserver_pid\n"
        "with open(f'/proc/{server}/comm') as comm:\n"
        "    assert comm.read().strip() == SERVER_NAME\n"
        "with open(f'/proc/{server}/cmdline', 'rb') as theirs, open('/proc/self/cmdline', 'rb') as ours:\n"
        "    assert theirs.read() == ours.read()   # a fork of this process, not a new interpreter\n"
        "os.close(write)   # the last writer, unless the server or the shard kept a copy\n"
        "assert select.select([read], [], [], 30)[0] and os.read(read, 1) == b''\n")
