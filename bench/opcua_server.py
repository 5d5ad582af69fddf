"""OPC UA integrator server under load: 5,000 variables changing every second, 10 subscriptions.

Run: `.venv/bin/python bench/opcua_server.py` (about 100 s; defaults `--tags 5000 --clients 10
--seconds 30`).

Setup: a server process builds a `TagStore` with `--tags` float tags (``station/S0000/p_in``,
``p_out`` (Pa), ``t_gas`` (°C), ``flow`` (m³/h), ``valve_pos`` (%): 5 tags per station, ranges
set, 10 areas) and runs `opcua.server.IntegratorServer` on a free loopback port (user
"bench"/"bench", role integrator). A feeder task on its loop changes every tag once a second
through `store.update_many`, in `--batches` batches spread over the second, each value's source
timestamp being the moment its batch is handed to the store. Clients run in `--procs` other
processes (asyncua `Client`, Basic256Sha256 SignAndEncrypt, a generated client certificate);
each session has one subscription (publishing interval `--publish-ms`, 100 ms) with every
variable monitored (sampling interval 0, queue size 1) and records, for each notification,
latency = time its PublishResponse was handed to the subscription (after decryption and
decoding) - SourceTimestamp (same machine clock). So up to one publishing interval of each
figure is the subscription's own batching window.

One server, three windows: no session (`--idle-seconds`), 1 session (`--anchor-seconds`, the
anchor: what one integrator costs), then `--clients` sessions (`--seconds`). Server CPU is the
server process's user+system time over the window (psutil), in % of one core; the clients' and
other processes' CPU over the same window is printed too, since all of them share the machine's
cores. Printed lines go to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import gc
import json
import logging
import os
import platform
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

USER, PASSWORD = "bench", "bench"
CLIENT_URI = "urn:gasops:bench-client"
N_AREAS = 10
# name, unit, low, high, base value (every second the value moves by 1 % of the span)
SIGNALS = (("p_in", "Pa", 0.0, 1_200_000.0, 300_000.0), ("p_out", "Pa", 0.0, 6_000.0, 2_800.0),
           ("t_gas", "degC", -40.0, 60.0, 8.0), ("flow", "m3/h", 0.0, 2_000.0, 300.0),
           ("valve_pos", "%", 0.0, 100.0, 50.0))


def tag(i: int) -> tuple[str, str, float, float, float]:
    """Path, unit, range low, range high and base value of tag `i`."""
    name, unit, low, high, base = SIGNALS[i % len(SIGNALS)]
    return f"station/S{i // len(SIGNALS):04d}/{name}", unit, low, high, base


def read_loadavg() -> str:
    """The 1, 5 and 15 minute load averages, as /proc/loadavg has them."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())


# --- the server process (`--serve VAR PORT`) ---------------------------------------------------


def serve(args: argparse.Namespace) -> None:
    """The integrator server over a store of `--tags` tags, and the feeder on its loop."""
    var = Path(args.var)
    logging.basicConfig(level=logging.WARNING, filename=var / "server.log",
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(_serve(args, var))


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


async def _serve(args: argparse.Namespace, var: Path) -> None:
    from opcua.server import IntegratorServer
    from realtime.model import Quality, TagDef, TagValue
    from realtime.store import TagStore

    n = args.tags
    defs = []
    for i in range(n):
        path, unit, low, high, _ = tag(i)
        defs.append(TagDef(path, unit=unit, description=f"bench tag {i}", area_id=f"A{i % N_AREAS:02d}",
                           range_low=low, range_high=high))
    store = TagStore(defs)
    paths = [d.path for d in defs]
    bases = [tag(i)[4] for i in range(n)]
    steps = [(tag(i)[3] - tag(i)[2]) / 100 for i in range(n)]
    good = Quality.GOOD
    now = dt.datetime.now(dt.UTC)
    store.update_many({p: TagValue(b, good, now, now) for p, b in zip(paths, bases, strict=True)})

    def users(username: str, password: str) -> str | None:
        return "integrator" if (username, password) == (USER, PASSWORD) else None

    t0 = time.perf_counter()
    server = IntegratorServer(store, cert_dir=var / "server-pki", users=users, host="127.0.0.1",
                              port=args.port)
    await server.start()
    startup = time.perf_counter() - t0
    if args.gc_freeze:  # an experiment: keep the address space out of full collections
        gc.collect()
        gc.freeze()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    stats: dict[str, Any] = {"fed": 0, "batches": 0, "late_sum": 0.0, "late_100ms": 0, "feed_s": 0.0,
                             "t": 0.0, "stalls": {}, "gc2": {}}
    gc_started = [0.0]

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        """Full (generation 2) collections: 10 ms bins of their durations, cumulative."""
        if info["generation"] != 2:
            return
        if phase == "start":
            gc_started[0] = time.perf_counter()
            return
        bin_ = str(int((time.perf_counter() - gc_started[0]) * 100))
        stats["gc2"][bin_] = stats["gc2"].get(bin_, 0) + 1

    gc.callbacks.append(on_gc)

    async def feeder() -> None:
        """Every tag once a second, in `batches` batches spread over the second."""
        groups = [range(n)[k::args.batches] for k in range(args.batches)]
        period = 1.0 / args.batches
        due = loop.time()
        second = 0
        while True:
            for group in groups:
                late = max(0.0, loop.time() - due)
                stats["late_sum"] += late
                stats["late_100ms"] += late > 0.1
                sign = 1.0 if second % 2 else -1.0
                now = dt.datetime.now(dt.UTC)
                t = time.perf_counter()
                store.update_many({paths[i]: TagValue(bases[i] + sign * steps[i], good, now, now)
                                   for i in group})
                stats["feed_s"] += time.perf_counter() - t  # the store + queueing for the writer
                stats["fed"] += len(group)
                stats["batches"] += 1
                due += period
                if loop.time() - due > 1.0:  # far behind: do not burst to catch up
                    due = loop.time()
                await asyncio.sleep(max(0.0, due - loop.time()))
            second += 1

    async def reporter() -> None:
        while True:
            stats["t"] = time.monotonic()
            _write_json(var / "feed.json", stats)
            await asyncio.sleep(0.25)

    async def stall_probe() -> None:
        """How long the loop keeps a 10 ms sleeper waiting past its time (10 ms bins, cumulative)."""
        stalls = stats["stalls"]
        while True:
            t = loop.time()
            await asyncio.sleep(0.01)
            bin_ = str(int((loop.time() - t - 0.01) * 100))
            stalls[bin_] = stalls.get(bin_, 0) + 1

    tasks = [asyncio.create_task(feeder()), asyncio.create_task(reporter()),
             asyncio.create_task(stall_probe())]
    _write_json(var / "ready.json", {"startup_s": startup, "ns": server.namespace_index,
                                     "certificate": str(server.certificate)})
    try:
        await stop.wait()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.wait_for(server.stop(), 20)


# --- a client process (`--client VAR PORT`): commands on stdin, one JSON line back each ---------


class Tally:
    """What the sessions of one client process received while measuring."""

    def __init__(self) -> None:
        self.measuring = False
        self.counts: dict[int, int] = {}
        self.hist: dict[int, int] = {}  # latency in whole ms → notifications
        self.seconds: dict[int, list[float]] = {}  # second of the window → [latency sum, count]
        self.t0 = 0.0
        self.publishes = 0
        self.reads: list[float] = []  # round trips of a Read (ServerStatus.State) every 0.5 s

    def start(self, sessions: int) -> None:
        self.counts = dict.fromkeys(range(sessions), 0)
        self.hist, self.seconds, self.publishes, self.reads = {}, {}, 0, []
        self.t0 = time.time()
        self.measuring = True

    def record(self, session: int, now: float, data: list[Any]) -> None:
        from asyncua import ua

        if not self.measuring:
            return
        hist = self.hist
        total, n = 0.0, 0
        for notification in data:
            if not isinstance(notification, ua.DataChangeNotification):
                continue
            for item in notification.MonitoredItems:
                lat = now - item.Value.SourceTimestamp.timestamp()
                ms = int(lat * 1000) if lat > 0 else 0
                hist[ms] = hist.get(ms, 0) + 1
                total += lat
                n += 1
        self.counts[session] = self.counts.get(session, 0) + n
        self.publishes += 1
        bucket = self.seconds.setdefault(int(now - self.t0), [0.0, 0])
        bucket[0] += total
        bucket[1] += n

    def result(self) -> dict[str, Any]:
        self.measuring = False
        return {"window": time.time() - self.t0, "counts": list(self.counts.values()), "hist": self.hist,
                "seconds": self.seconds, "publishes": self.publishes, "reads": self.reads}


async def _session(args: argparse.Namespace, var: Path, index: int, tally: Tally) -> Any:
    """One SignAndEncrypt session with one subscription monitoring every variable."""
    from asyncua import Client, ua
    from asyncua.common.subscription import Subscription
    from asyncua.crypto import security_policies

    from opcua.server import NAMESPACE_URI

    class Counting(Subscription):
        async def publish_callback(self, publish_result: ua.PublishResult) -> None:
            now = time.time()
            self.last_publish_at = time.monotonic()
            data = publish_result.NotificationMessage.NotificationData
            if data:
                self.last_sequence_number = int(publish_result.NotificationMessage.SequenceNumber)
                tally.record(index, now, data)

    ready = json.loads((var / "ready.json").read_text())
    client = Client(f"opc.tcp://127.0.0.1:{args.port}", timeout=60, watchdog_intervall=args.watchdog)
    client.application_uri = CLIENT_URI
    client.session_timeout = 120_000
    await client.set_security(security_policies.SecurityPolicyBasic256Sha256,
                              str(var / "client-pki" / "bench-client.der"),
                              str(var / "client-pki" / "bench-client.pem"),
                              server_certificate=ready["certificate"],
                              mode=ua.MessageSecurityMode.SignAndEncrypt)
    client.set_user(USER)
    client.set_password(PASSWORD)
    await client.connect()
    ns = await client.get_namespace_index(NAMESPACE_URI)
    interval = float(args.publish_ms)
    params = ua.CreateSubscriptionParameters(
        RequestedPublishingInterval=interval, RequestedLifetimeCount=10_000,
        RequestedMaxKeepAliveCount=client.get_keepalive_count(interval), MaxNotificationsPerPublish=0,
        PublishingEnabled=True, Priority=0)
    sub = Counting(client.uaclient.session, params, None)
    await sub.init()
    requests = []
    for i in range(args.tags):
        item = ua.MonitoredItemCreateRequest(
            ItemToMonitor=ua.ReadValueId(NodeId=ua.NodeId(tag(i)[0], ns), AttributeId=ua.AttributeIds.Value),
            MonitoringMode=ua.MonitoringMode.Reporting,
            RequestedParameters=ua.MonitoringParameters(ClientHandle=i + 1, SamplingInterval=0.0, QueueSize=1,
                                                        DiscardOldest=True))
        requests.append(item)
    results = await sub.create_monitored_items(requests)
    bad = [r for r in results if isinstance(r, ua.StatusCode)]
    if bad:
        raise RuntimeError(f"{len(bad)} monitored items refused, e.g. {bad[0]}")
    return client


def client_process(args: argparse.Namespace) -> None:
    """Sessions on demand; `connect N`, `start`, `stop` (→ figures), `quit`."""
    var = Path(args.var)
    logging.basicConfig(level=logging.WARNING, filename=var / f"client-{os.getpid()}.log",
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(_client_loop(args, var))


async def _client_loop(args: argparse.Namespace, var: Path) -> None:
    loop = asyncio.get_running_loop()
    tally = Tally()
    clients: list[Any] = []

    async def probe() -> None:
        """While measuring, time a Read of ServerStatus.State on the first session every 0.5 s."""
        while True:
            await asyncio.sleep(0.5)
            if tally.measuring and clients:
                t = time.perf_counter()
                try:
                    await clients[0].nodes.server_state.read_value()
                except Exception:
                    tally.reads.append(float("inf"))
                else:
                    tally.reads.append(time.perf_counter() - t)

    prober = asyncio.create_task(probe())

    def reply(data: Any) -> None:
        sys.stdout.write(json.dumps(data) + "\n")
        sys.stdout.flush()

    try:
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            words = line.split()
            if not words or words[0] == "quit":
                break
            if words[0] == "connect":
                t0 = time.perf_counter()
                first = len(clients)
                clients += await asyncio.gather(*(_session(args, var, first + k, tally)
                                                  for k in range(int(words[1]))))
                reply({"sessions": len(clients), "seconds": time.perf_counter() - t0})
            elif words[0] == "start":
                tally.start(len(clients))
                reply({"ok": True})
            elif words[0] == "stop":
                reply(tally.result())
    finally:
        prober.cancel()
        for client in clients:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.disconnect(), 10)


# --- the bench process -------------------------------------------------------------------------


class Worker:
    """A client process and its command line."""

    def __init__(self, args: argparse.Namespace, var: Path, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--client", str(var), str(args.port),
             "--tags", str(args.tags), "--publish-ms", str(args.publish_ms),
             "--watchdog", str(args.watchdog)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT,
            start_new_session=True)
        self.sessions = 0

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def answer(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            if not sel.select(timeout):
                raise RuntimeError(f"client process {self.proc.pid} did not answer in {timeout:.0f} s")
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"client process {self.proc.pid} exited (rc {self.proc.poll()}); see its log")
        return dict(json.loads(line))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.send("quit")
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def _cpu(proc: Any) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


def _busy() -> float:
    import psutil

    t = psutil.cpu_times()
    return float(t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)
                 + getattr(t, "steal", 0.0))


def measure(seconds: float, server: subprocess.Popen[bytes], workers: list[Worker], var: Path
            ) -> dict[str, Any]:
    """One window: the clients' notifications, the server's CPU and RSS, the feeder's pace."""
    import psutil

    sp = psutil.Process(server.pid)
    wps = [psutil.Process(w.proc.pid) for w in workers]
    me = psutil.Process()
    for w in workers:
        w.send("start")
    for w in workers:
        w.answer(30)
    feed0 = json.loads((var / "feed.json").read_text())
    s0, w0, m0, b0, t0 = _cpu(sp), [_cpu(p) for p in wps], _cpu(me), _busy(), time.monotonic()
    per_second: list[float] = []
    last, last_t = s0, t0
    while time.monotonic() < t0 + seconds:
        time.sleep(min(1.0, t0 + seconds - time.monotonic()))
        now_cpu, now_t = _cpu(sp), time.monotonic()
        if now_t - last_t > 0.5:
            per_second.append((now_cpu - last) / (now_t - last_t) * 100)
        last, last_t = now_cpu, now_t
        if server.poll() is not None:
            raise RuntimeError("the server exited during the window; see server.log")
    s1, w1, m1, b1, t1 = _cpu(sp), [_cpu(p) for p in wps], _cpu(me), _busy(), time.monotonic()
    feed1 = json.loads((var / "feed.json").read_text())
    for w in workers:
        w.send("stop")
    results = [w.answer(60) for w in workers]
    wall = t1 - t0
    ours = (s1 - s0) + sum(b - a for a, b in zip(w0, w1, strict=True)) + (m1 - m0)
    hist: dict[int, int] = {}
    seconds_lat: dict[int, list[float]] = {}
    counts: list[int] = []
    windows: list[float] = []
    for r in results:
        for ms, k in r["hist"].items():
            hist[int(ms)] = hist.get(int(ms), 0) + k
        for sec, (total, k) in r["seconds"].items():
            bucket = seconds_lat.setdefault(int(sec), [0.0, 0])
            bucket[0] += total
            bucket[1] += k
        counts += r["counts"]
        windows.append(r["window"])
    batches = feed1["batches"] - feed0["batches"]
    return {
        "wall": wall, "server_cpu": (s1 - s0) / wall * 100, "server_cpu_max": max(per_second, default=0.0),
        "rss": sp.memory_info().rss,
        "client_cpu": [(b - a) / wall * 100 for a, b in zip(w0, w1, strict=True)],
        "others_cpu": max(0.0, (b1 - b0) - ours) / wall * 100,
        "fed_per_s": (feed1["fed"] - feed0["fed"]) / max(feed1["t"] - feed0["t"], 1e-3),
        "feed_ms": (feed1["feed_s"] - feed0["feed_s"]) / max(batches, 1) * 1000,
        "late_ms": (feed1["late_sum"] - feed0["late_sum"]) / max(batches, 1) * 1000,
        "late_100ms": feed1["late_100ms"] - feed0["late_100ms"], "batches": batches,
        "hist": hist, "counts": counts, "client_window": max(windows, default=wall),
        "seconds": {s: v[0] / v[1] for s, v in sorted(seconds_lat.items()) if v[1]},
        "stalls": stall_delta(feed0, feed1), "gc2": stall_delta(feed0, feed1, "gc2"),
        "reads": [x for r in results for x in r["reads"]],
    }


def stall_delta(feed0: dict[str, Any], feed1: dict[str, Any], key: str = "stalls") -> dict[int, int]:
    """A 10 ms histogram of the server's (loop stalls, full collections) between two feed reports."""
    out = {int(b): k - feed0[key].get(b, 0) for b, k in feed1[key].items()}
    return {b: k for b, k in out.items() if k > 0}


def stalls(hist: dict[int, int]) -> str:
    """The longest server loop stall and how many were 100 ms or longer."""
    if not hist:
        return "no probe"
    return (f"longest {max(hist) * 10}-{max(hist) * 10 + 10} ms, "
            f"{sum(k for b, k in hist.items() if b >= 10)} of {sum(hist.values()):,} probes >= 100 ms")


def collections(hist: dict[int, int]) -> str:
    """How many full garbage collections the server made, and the longest."""
    if not hist:
        return "none"
    return f"{sum(hist.values())}, longest {max(hist) * 10}-{max(hist) * 10 + 10} ms"


def reads(rtts: list[float]) -> str:
    """Read round trips: median and max (inf: failed)."""
    if not rtts:
        return "no reads"
    done = sorted(rtts)
    failed = sum(1 for x in done if x == float("inf"))
    ok = [x for x in done if x != float("inf")]
    if not ok:
        return f"all {failed} failed"
    return (f"median {ok[len(ok) // 2] * 1000:.0f} ms, max {ok[-1] * 1000:.0f} ms over {len(ok)} reads"
            + (f", {failed} failed" if failed else ""))


def quantile(hist: dict[int, int], q: float) -> int:
    """The `q` quantile (0..1) of a 1 ms histogram, in ms (upper edge of its bin)."""
    total = sum(hist.values())
    want, seen = q * total, 0
    for ms in sorted(hist):
        seen += hist[ms]
        if seen >= want:
            return ms + 1
    return 0


def latency(hist: dict[int, int]) -> str:
    """p50 / p99 / max in ms."""
    if not hist:
        return "no notifications"
    return (f"p50 {quantile(hist, 0.5)} ms, p99 {quantile(hist, 0.99)} ms, max {max(hist) + 1} ms "
            f"({sum(hist.values()):,} notifications)")


def trend(seconds: dict[int, float]) -> tuple[float, float, bool]:
    """Mean latency of the first and last quarter of the window; True when it kept growing."""
    values = list(seconds.values())
    if len(values) < 4:
        return 0.0, 0.0, False
    k = max(1, len(values) // 4)
    first, last = sum(values[:k]) / k, sum(values[-k:]) / k
    return first * 1000, last * 1000, last > first + 0.25 and last > 1.5 * first


def describe(m: dict[str, Any], sessions: int, n_tags: int) -> str:
    """The figures of one window, as one line."""
    text = (f"server CPU {m['server_cpu']:.0f} % of one core (busiest second {m['server_cpu_max']:.0f} %), "
            f"RSS {m['rss'] / 2**20:.0f} MiB; fed {m['fed_per_s']:,.0f} changes/s")
    if sessions:
        per = [c / m["client_window"] for c in m["counts"]]
        text += (f"; per session {min(per):,.0f}-{max(per):,.0f} updates/s "
                 f"({sum(per) / len(per) / max(m['fed_per_s'], 1) * 100:.1f} % of the changes); "
                 f"change -> client {latency(m['hist'])}; a Read (ServerStatus.State) {reads(m['reads'])}")
    return (text + f"; server loop stalls (10 ms sleeper): {stalls(m['stalls'])}; "
            f"full GCs {collections(m['gc2'])}")


def main() -> None:
    """Start the server, measure 0, 1 and `--clients` sessions, print lines for bench/RESULTS.md."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    ap.add_argument("--tags", type=int, default=5000, help="variables, all changing every second")
    ap.add_argument("--clients", type=int, default=10, help="sessions in the main window")
    ap.add_argument("--procs", type=int, default=2, help="client processes the sessions are spread over")
    ap.add_argument("--seconds", type=float, default=30.0, help="the main window")
    ap.add_argument("--anchor-seconds", type=float, default=15.0, help="the 1-session window")
    ap.add_argument("--idle-seconds", type=float, default=8.0, help="the no-session window")
    ap.add_argument("--warmup", type=float, default=5.0, help="seconds after subscribing, before measuring")
    ap.add_argument("--batches", type=int, default=10, help="feeder batches per second")
    ap.add_argument("--publish-ms", type=float, default=100.0, help="subscription publishing interval")
    ap.add_argument("--watchdog", type=float, default=30.0,
                    help="asyncua client's connection probe interval and timeout, s (asyncua's default: 1 s)")
    ap.add_argument("--gc-freeze", action="store_true",
                    help="experiment: gc.freeze() in the server process once the server has started")
    ap.add_argument("--logs", type=Path, help="copy the server's and clients' logs into this folder")
    ap.add_argument("--serve", nargs=2, metavar=("VAR", "PORT"), help=argparse.SUPPRESS)
    ap.add_argument("--client", nargs=2, metavar=("VAR", "PORT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve or args.client:
        args.var, port = args.serve or args.client
        args.port = int(port)
        (serve if args.serve else client_process)(args)
        return

    from opcua._security import generate_certificate
    from server.field import free_port

    load_before = read_loadavg()
    started = time.monotonic()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    procs = max(1, min(args.procs, args.clients))
    with tempfile.TemporaryDirectory(prefix="gasops-opcua-bench-") as tmp:
        var = Path(tmp)
        pair = generate_certificate(var / "client-pki", "bench-client", application_uri=CLIENT_URI)
        trusted = var / "server-pki" / "trusted"  # the server's trust list (opcua.trust)
        trusted.mkdir(parents=True)
        shutil.copy(pair.certificate, trusted)
        args.port = free_port()
        server = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--serve", str(var), str(args.port),
             "--tags", str(args.tags), "--batches", str(args.batches)] + ["--gc-freeze"] * args.gc_freeze,
            env=env, cwd=ROOT, start_new_session=True)
        workers: list[Worker] = []
        try:
            deadline = time.monotonic() + 120
            while not (var / "ready.json").exists():
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the server did not start; see server.log")
                time.sleep(0.1)
            ready = json.loads((var / "ready.json").read_text())
            time.sleep(2)  # the feeder settles
            idle = measure(args.idle_seconds, server, [], var)

            workers.append(Worker(args, var, env))
            workers[0].send("connect 1")
            one_connect = workers[0].answer(120)["seconds"]
            time.sleep(args.warmup)
            one = measure(args.anchor_seconds, server, workers[:1], var)

            workers += [Worker(args, var, env) for _ in range(procs - 1)]
            share = [args.clients // procs + (k < args.clients % procs) for k in range(procs)]
            share[0] -= 1  # the first process keeps its anchor session
            t0 = time.monotonic()
            feed0 = json.loads((var / "feed.json").read_text())
            for w, k in zip(workers, share, strict=True):
                if k:
                    w.send(f"connect {k}")
            for w, k in zip(workers, share, strict=True):
                if k:
                    w.answer(180)
            many_connect = time.monotonic() - t0
            connect_stalls = stall_delta(feed0, json.loads((var / "feed.json").read_text()))
            time.sleep(args.warmup)
            many = measure(args.seconds, server, workers, var)
        finally:
            for w in workers:
                w.close()
            server.terminate()
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait(10)
            logs = {p.name: p.read_text(errors="replace").splitlines() for p in sorted(var.glob("*.log"))}
            if args.logs is not None:
                args.logs.mkdir(parents=True, exist_ok=True)
                for name, lines in logs.items():
                    (args.logs / name).write_text("\n".join(lines) + "\n")
    load_after = read_loadavg()

    n, k = args.tags, args.clients
    print(("[--gc-freeze: gc.freeze() in the server process after start] " if args.gc_freeze else "")
          + f"OPC UA integrator server, {n:,} variables changing every second ({args.batches} batches/s), "
          f"{k} SignAndEncrypt sessions each monitoring all {n:,} (publishing {args.publish_ms:.0f} ms, "
          f"sampling 0), {many['wall']:.0f} s: {describe(many, k, n)}")
    print(f"anchor, 1 session, {one['wall']:.0f} s: {describe(one, 1, n)}")
    print(f"anchor, no session, {idle['wall']:.0f} s: {describe(idle, 0, n)}")
    first, last, growing = trend(many["seconds"])
    cpu = ", ".join(f"{c:.0f} %" for c in many["client_cpu"])
    print(f"clients ({k} sessions in {procs} processes): CPU {cpu} of one core; mean latency first quarter "
          f"{first:.0f} ms, last quarter {last:.0f} ms"
          + (" -- GROWING: something (server or clients) cannot keep up" if growing else " (steady)"))
    print(f"feeder: a batch of {n // args.batches:,} into the store {many['feed_ms']:.1f} ms with "
          f"{k} sessions, {one['feed_ms']:.1f} ms with 1, {idle['feed_ms']:.1f} ms with none; woken late "
          f"{many['late_ms']:.0f} ms mean ({many['late_100ms']} of {many['batches']} batches > 100 ms) with "
          f"{k}, {one['late_ms']:.0f} ms with 1, {idle['late_ms']:.0f} ms with none")
    print(f"setup: server start (address space for {n:,} tags) {ready['startup_s']:.1f} s; 1 session "
          f"with {n:,} monitored items {one_connect:.1f} s; {k - 1} more at once {many_connect:.1f} s "
          f"(server loop stalls meanwhile: {stalls(connect_stalls)})")
    problems = [(name, line) for name, lines in logs.items() for line in lines
                if " WARNING " in line or " ERROR " in line or " CRITICAL " in line]
    print(f"logs: {len(problems)} warnings/errors" + "".join(
        f"\n  {name}: {line[:200]}" for name, line in problems[:5]))
    cores = os.cpu_count() or 1
    busy_before = float(load_before.split()[0])
    print(f"machine: {platform.machine()}, {cores} cores, Python {platform.python_version()}; load average "
          f"before {load_before}, after {load_after}"
          + (" -- HIGH before the run: other work was running, figures are noisy"
             if busy_before > 0.5 * cores else "")
          + f"; other processes used {many['others_cpu']:.0f} % of one core during the {k}-session window, "
          f"{one['others_cpu']:.0f} % during the 1-session one; run took {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
