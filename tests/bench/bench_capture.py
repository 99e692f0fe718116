"""Capture+store rate of the worker against `tcpdump -w`, on the same iperf3 floods on lo.

    .venv/bin/python tests/bench/bench_capture.py --seconds 5 [--json-out FILE]

Capturers, one after the other, each on a fresh output directory with the same BPF filter:
`tcpdump -i lo -w FILE` (its defaults), the worker with `--source af_packet` and with
`--source pcap`. Floods:
  - UDP: iperf3 -u -l 64 at -b 0 (as fast as iperf3 goes) and, as a sweep, at fixed packet
    rates (iperf3 -b is payload bits/s, so -b = pps * 64 * 8) to find each capturer's highest
    rate with zero drops;
  - TCP: iperf3 at default length, the worker and tcpdump with a small snaplen so that the disk
    is not what is measured (the same snaplen for both).
Offered packets come from iperf3's JSON (UDP); stored packets from tcpdump's closing lines on
SIGINT ("N packets captured", "N packets dropped by kernel") and from the worker's /status
(store.packets_written, capture.dropped) once its counters stop moving. The worker is stopped
(SIGTERM to its process group) between runs. Needs root, iperf3 and tcpdump.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (Child, Worker, cpu_seconds, machine, table, tree_cpu_seconds,  # noqa: E402
                     tree_peak_rss_mb, tree_pids, wait_for, wait_for_quiet, write_json)

UDP_LENGTH = 64
CAPTURERS = ("tcpdump", "worker-af_packet", "worker-pcap")


@dataclass
class Run:
    flood: str                 # "udp" | "tcp"
    target_pps: int | None     # None: iperf3 -b 0 (as fast as it goes)
    capturer: str
    seconds: float = 0.0       # iperf3's measured duration
    offered: int | None = None  # UDP: datagrams iperf3 sent; TCP: segments the machine sent
    iperf3_gbps: float = 0.0   # payload throughput iperf3 reported (sender side)
    stored: int = 0            # packets written to the file / the store
    kernel_dropped: int = 0
    if_dropped: int = 0
    other_dropped: int = 0     # the worker's dropped_on_write
    capturer_cpu_s: float = 0.0   # CPU time the capturer used during the flood
    capture_cpu_s: float | None = None   # the worker's capture child alone
    capturer_rss_mb: float = 0.0
    store_bytes: int = 0
    notes: list[str] = field(default_factory=list)
    failed: str = ""           # why the run produced no numbers

    @property
    def offered_pps(self) -> float | None:
        return self.offered / self.seconds if self.offered is not None and self.seconds else None

    @property
    def stored_pps(self) -> float:
        return self.stored / self.seconds if self.seconds else 0.0

    @property
    def lost(self) -> int:
        """Packets offered but not stored (tcpdump's own kernel-drop line counts each lo packet
        twice, so offered - stored is the number to compare)."""
        if self.flood == "tcp":   # offered counts the whole machine's segments: drops only
            return self.kernel_dropped + self.other_dropped
        gap = max(0, self.offered - self.stored) if self.offered is not None else 0
        return max(gap, self.other_dropped)

    @property
    def cpu_us_per_packet(self) -> float | None:
        return self.capturer_cpu_s / self.stored * 1e6 if self.stored else None

    @property
    def zero_drop(self) -> bool:
        return self.lost == 0 and self.kernel_dropped == 0

    def row(self) -> dict:
        data = asdict(self)
        data.update(offered_pps=self.offered_pps, stored_pps=self.stored_pps, lost=self.lost,
                    cpu_us_per_packet=self.cpu_us_per_packet, zero_drop=self.zero_drop)
        return data


# -- pieces -------------------------------------------------------------------------------------
def _listening(port: int) -> bool:
    hexport = f":{port:04X}"
    for table_path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table_path) as table_file:
                next(table_file)
                for line in table_file:
                    local, state = line.split()[1], line.split()[3]
                    if local.endswith(hexport) and state == "0A":
                        return True
        except OSError:
            continue
    return False


def _tcp_out_segments() -> int:
    """Tcp OutSegs of the whole machine (/proc/net/snmp): every TCP segment sent, here mostly
    the flood's data and ACKs on lo, since the flood dwarfs any other traffic."""
    with open("/proc/net/snmp") as snmp:
        lines = [line.split() for line in snmp if line.startswith("Tcp:")]
    return int(lines[1][lines[0].index("OutSegs")])


def _flood(flood: str, port: int, seconds: float, target_pps: int | None, logs: Path,
           tag: str) -> dict:
    """One iperf3 server (-1: exits after one test) and client; returns the client's JSON."""
    server = Child(["iperf3", "-s", "-p", str(port), "-1"], logs, f"{tag}-iperf3-server")
    try:
        wait_for(lambda: _listening(port), 10, f"iperf3 server on port {port}")
        argv = ["iperf3", "-c", "127.0.0.1", "-p", str(port), "-t", str(seconds), "--json"]
        if flood == "udp":
            bits = 0 if target_pps is None else target_pps * UDP_LENGTH * 8
            argv += ["-u", "-l", str(UDP_LENGTH), "-b", str(bits)]
        segments_before = _tcp_out_segments()
        client = Child(argv, logs, f"{tag}-iperf3-client")
        client.wait(seconds + 30)
        server.wait(15)
        result = json.loads(client.stdout())
        result["tcp_out_segments"] = _tcp_out_segments() - segments_before
        if "error" in result:
            raise RuntimeError(f"iperf3: {result['error']}")
        return result
    finally:
        server.stop()


def _flood_numbers(run: Run, result: dict) -> None:
    end = result["end"]
    summary = end["sum"] if run.flood == "udp" else end["sum_sent"]
    run.seconds = float(summary["seconds"])
    run.iperf3_gbps = float(summary["bits_per_second"]) / 1e9
    run.offered = int(summary["packets"]) if run.flood == "udp" else result["tcp_out_segments"]


def _settled(worker: Worker, quiet_polls: int = 4, interval: float = 0.25, timeout: float = 60) -> dict:
    """/status once capture.received and store.packets_written have stopped changing."""
    last, same = None, 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = worker.status()
        key = (status["capture"]["received"], (status["store"] or {}).get("packets_written"))
        same = same + 1 if key == last else 0
        if same >= quiet_polls:
            return status
        last = key
        time.sleep(interval)
    return worker.status()


_TCPDUMP_LINES = {
    "captured": re.compile(r"(\d+) packets? captured"),
    "received": re.compile(r"(\d+) packets? received by filter"),
    "kernel": re.compile(r"(\d+) packets? dropped by kernel"),
    "interface": re.compile(r"(\d+) packets? dropped by interface"),
}


def run_tcpdump(run: Run, args: argparse.Namespace, port: int, bpf: str, snaplen: int,
                out_dir: Path, logs: Path) -> Run:
    argv = ["tcpdump", "-i", "lo", "-n", "-w", str(out_dir / "capture.pcap"), "-s", str(snaplen)]
    if args.tcpdump_buffer_kib:
        argv += ["-B", str(args.tcpdump_buffer_kib)]
    tag = f"{run.flood}-{run.target_pps or 'max'}-tcpdump"
    tcpdump = Child([*argv, bpf], logs, tag, measure=True)
    try:
        tcpdump.wait_stderr(r"listening on lo", 20)
        time.sleep(0.5)
        cpu0 = tree_cpu_seconds(tcpdump.pid)
        result = _flood(run.flood, port, args.seconds, run.target_pps, logs, tag)
        time.sleep(1.0)   # let tcpdump read what is still in its buffer
        run.capturer_cpu_s = tree_cpu_seconds(tcpdump.pid) - cpu0
    finally:
        tcpdump.stop(signal.SIGINT)
    _flood_numbers(run, result)
    text = tcpdump.stderr()
    numbers = {k: int(m.group(1)) if (m := regex.search(text)) else None
               for k, regex in _TCPDUMP_LINES.items()}
    if numbers["captured"] is None:
        raise RuntimeError(f"tcpdump printed no 'packets captured' line: {text[-1000:]}")
    run.stored = numbers["captured"]
    run.kernel_dropped = numbers["kernel"] or 0
    run.if_dropped = numbers["interface"] or 0
    run.capturer_rss_mb = tcpdump.maxrss_mb
    run.store_bytes = (out_dir / "capture.pcap").stat().st_size
    return run


def run_worker(run: Run, args: argparse.Namespace, port: int, bpf: str, snaplen: int,
               out_dir: Path, logs: Path) -> Run:
    source = run.capturer.split("-", 1)[1]
    tag = f"{run.flood}-{run.target_pps or 'max'}-{run.capturer}"
    worker = Worker(["--iface", "lo", "--bpf", bpf, "--source", source, "--snaplen", str(snaplen),
                     "--storage-limit", args.storage_limit], out_dir, logs, tag)
    failure: Exception | None = None
    try:
        time.sleep(0.5)
        children = tree_pids(worker.pid)[1:]   # the capture child
        cpu0, capture0 = tree_cpu_seconds(worker.pid), cpu_seconds(children)
        result = _flood(run.flood, port, args.seconds, run.target_pps, logs, tag)
        status = _settled(worker)
        run.capturer_cpu_s = tree_cpu_seconds(worker.pid) - cpu0
        run.capture_cpu_s = cpu_seconds(children) - capture0
        run.capturer_rss_mb = tree_peak_rss_mb(worker.pid)
    except OSError as error:   # e.g. /status refused: the worker is gone
        failure = error
    finally:
        code = worker.stop(signal.SIGTERM)
    if failure is not None:
        tail = " | ".join(worker.stderr().strip().splitlines()[-3:])
        raise RuntimeError(f"worker failed (exit code {code}): {failure}; stderr: {tail}")
    if code != 0:
        run.notes.append(f"worker exited {code}")
    _flood_numbers(run, result)
    capture, store = status["capture"], status["store"] or {}
    run.stored = int(store.get("packets_written", 0))
    run.kernel_dropped = int(capture["dropped"])
    run.if_dropped = int(capture["if_dropped"])
    run.other_dropped = int(capture.get("dropped_on_write", 0))
    run.store_bytes = int(store.get("bytes", 0))
    dissection = status.get("dissection") or {}
    if not dissection.get("caught_up", True):
        run.notes.append(f"dissection lagging ({dissection.get('lag_bytes')} bytes)")
    return run


def one(flood: str, target_pps: int | None, capturer: str, args: argparse.Namespace,
        base: Path) -> Run:
    port = random.randint(20000, 29999)
    snaplen = args.tcp_snaplen if flood == "tcp" else 262144
    bpf = f"{flood} port {port}"
    out_dir = Path(tempfile.mkdtemp(prefix=f"{flood}-{capturer}-", dir=base))
    logs = base / "logs"
    run = Run(flood, target_pps, capturer)
    runner = run_tcpdump if capturer == "tcpdump" else run_worker
    try:
        runner(run, args, port, bpf, snaplen, out_dir, logs)
    except (RuntimeError, OSError, ValueError, KeyError) as error:   # report it, go on
        run.failed = str(error)
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
    if run.failed:
        print(f"  {flood:3} {target_pps or 'max'} {capturer}: FAILED: {run.failed}",
              file=sys.stderr, flush=True)
        return run
    rate = f"{run.offered_pps:,.0f} pps offered" if run.offered_pps else f"{run.seconds:.1f}s"
    print(f"  {flood:3} {('max' if target_pps is None else f'{target_pps:,}'):>8} {capturer:17} "
          f"{rate}, stored {run.stored:,} ({run.stored_pps:,.0f} pps), lost {run.lost:,}, "
          f"kernel drops {run.kernel_dropped:,}, cpu {run.capturer_cpu_s:.1f}s "
          f"{' '.join(run.notes)}", file=sys.stderr, flush=True)
    return run


# -- reporting ----------------------------------------------------------------------------------
def _ratio(a: float | None, b: float | None) -> str | None:
    return f"{a / b:.2f}x" if a is not None and b else None


def flood_table(runs: list[Run], flood: str) -> str:
    runs = [r for r in runs if not r.failed]
    rows = []
    peer = next((r for r in runs if r.capturer == "tcpdump"), None)
    udp = flood == "udp"
    for r in runs:
        offered = [r.offered, r.offered_pps] if udp else [r.iperf3_gbps, r.offered]
        cpu = f"{r.capturer_cpu_s:.2f}" + (f" ({r.capture_cpu_s:.2f})" if r.capture_cpu_s is not None else "")
        rows.append([r.capturer, r.seconds, *offered, r.stored, r.stored_pps, r.lost,
                     r.kernel_dropped, cpu, r.cpu_us_per_packet, r.capturer_rss_mb,
                     _ratio(r.stored_pps, peer.stored_pps if peer else None)])
    offered_headers = (["offered", "offered pps"] if udp
                       else ["iperf3 Gbit/s", "TCP segments sent"])
    headers = ["capturer", "seconds", *offered_headers, "stored", "stored pps", "lost",
               "kernel drops", "cpu s (capture proc)", "cpu us/pkt", "peak RSS MB",
               "stored pps / tcpdump"]
    return table(headers, rows)


def sweep_table(runs: list[Run]) -> tuple[str, dict[str, float | None]]:
    rates = sorted({r.target_pps for r in runs if r.target_pps is not None}) + [None]
    rows, best = [], {}
    for capturer in CAPTURERS:
        mine = {r.target_pps: r for r in runs if r.capturer == capturer and not r.failed}
        if not mine:
            continue
        cells = []
        for rate in rates:
            r = mine.get(rate)
            if r is None:
                cells.append(None)
                continue
            cells.append(f"{r.offered_pps / 1000:.0f}k ok" if r.zero_drop
                         else f"{r.offered_pps / 1000:.0f}k -{r.lost:,}")
        zero = [r.offered_pps for r in mine.values() if r.zero_drop and r.offered_pps]
        best[capturer] = max(zero) if zero else None
        rows.append([capturer, *cells, best[capturer]])
    headers = ["capturer", *[("max" if r is None else f"{r // 1000}k") for r in rates],
               "best zero-drop pps"]
    return table(headers, rows), best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each flood")
    parser.add_argument("--rates", default="50000,100000,200000,250000,300000,350000,400000",
                        help="UDP sweep rates in packets/s, comma separated ('' for none)")
    parser.add_argument("--capturers", default=",".join(CAPTURERS))
    parser.add_argument("--no-tcp", action="store_true")
    parser.add_argument("--tcp-snaplen", type=int, default=128)
    parser.add_argument("--tcpdump-buffer-kib", type=int, default=0,
                        help="tcpdump -B (0: tcpdump's default)")
    parser.add_argument("--storage-limit", default="4GB", help="the worker's --storage-limit")
    parser.add_argument("--max-load", type=float, default=1.0,
                        help="wait (up to 5 min) for the 1-min load to drop below this first")
    parser.add_argument("--work-dir", default=None)
    parser.add_argument("--json-out", default=None)
    args = parser.parse_args()
    for tool in ("iperf3", "tcpdump"):
        if shutil.which(tool) is None:
            parser.error(f"{tool} is not installed")
    if os.geteuid() != 0:
        parser.error("capture on lo needs root")
    capturers = [c for c in args.capturers.split(",") if c]
    rates = [int(float(x)) for x in args.rates.split(",") if x.strip()]

    load_before = wait_for_quiet(args.max_load, 300)
    base = Path(args.work_dir or tempfile.mkdtemp(prefix="shark-bench-capture-"))
    (base / "logs").mkdir(parents=True, exist_ok=True)
    info = machine()
    print(f"machine: {info}; work dir {base}", file=sys.stderr)

    udp: list[Run] = []
    tcp: list[Run] = []
    try:
        for rate in [*rates, None]:    # the sweep, then as fast as iperf3 goes
            for capturer in capturers:
                udp.append(one("udp", rate, capturer, args, base))
        if not args.no_tcp:
            tcp = [one("tcp", None, c, args, base) for c in capturers]
    finally:
        if not args.work_dir:   # logs are kept only in a --work-dir
            shutil.rmtree(base, ignore_errors=True)
    load_after = [round(x, 2) for x in os.getloadavg()]

    print(f"\nmachine: {info['nproc']} x {info['cpu']}, kernel {info['kernel']}, "
          f"Python {info['python']}; load before {load_before}, after {load_after}")
    print(f"\nUDP flood, iperf3 -u -l {UDP_LENGTH} -b 0, {args.seconds:g} s:")
    print(flood_table([r for r in udp if r.target_pps is None], "udp"))
    if tcp:
        print(f"\nTCP flood, iperf3 default length, snaplen {args.tcp_snaplen}, {args.seconds:g} s:")
        print(flood_table(tcp, "tcp"))
    sweep, best = sweep_table(udp)
    print(f"\nUDP sweep (offered pps; 'ok' = zero drops, else packets lost), {args.seconds:g} s each:")
    print(sweep)
    peer = best.get("tcpdump")
    for capturer, value in best.items():
        if capturer != "tcpdump":
            print(f"  {capturer}: highest zero-drop {value and f'{value:,.0f}'} pps, "
                  f"tcpdump {peer and f'{peer:,.0f}'} pps, ratio {_ratio(value, peer)}")
    for r in [*udp, *tcp]:
        if r.failed:
            print(f"FAILED {r.flood} {r.target_pps or 'max'} {r.capturer}: {r.failed}")
    write_json(args.json_out, {
        "machine": info, "load_before": load_before, "load_after": load_after,
        "seconds": args.seconds, "tcp_snaplen": args.tcp_snaplen,
        "udp": [r.row() for r in udp], "tcp": [r.row() for r in tcp],
        "best_zero_drop_pps": best})
    return 0


if __name__ == "__main__":
    sys.exit(main())
