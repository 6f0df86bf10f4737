"""What ``sandbox serve`` adds to a request, against the same loop run in-process, same scripted model.

    sandbox bench serve [--quick]

The model is the scripted one of the serve tests (``python -m sandbox.serve.scripted``,
a process of its own, answering at once), so the numbers are the server's and the
sandbox's, not a model's. Two requests: one code run then text (two model calls, a
session opened, ``print(1)`` run in it, closed) and plain generation (one model call).
Five paths (serve_paths.py): the model called directly (no sandbox: the floor), in this
process ``run_chat`` of ``sandbox.adapters.openai`` (the adapter; plain generation: the
SDK's ``create``) and the server's own loop without HTTP, then through ``sandbox serve``
(default policy and image, like this process's Sandbox) with the real ``google-genai``
client and with raw httpx.

Two modes. ``paced``: one client, the paths take turns request by request (so a change
in the machine's load hits all of them alike), ``PAUSE_S`` before each request (a
user's turn, in which each sandbox refills its pre-forked pool: back to back, a
request would pay for the previous one's teardown); this gives the latency and the
overhead per request. ``back to back``: ``clients`` threads per path (each with its
own SDK client) sending without pause until the path's share is done, the paths taking
turns in rounds; requests/s is requests over that wall time. Latency is from the call
until the checked answer is in hand; one request of each path and kind warms up first.

The server's own overhead per request is (through the server) - (in-process
``run_chat``), at p50 and at p99 (a difference of percentiles, not a percentile of
differences); ``http_front_end`` is (serve via httpx) - (the server's loop in-process):
the HTTP, JSON and ASGI layer alone.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from typing import Any, Iterator

from . import common, report
from .serve_paths import (SCENARIOS, EngineInProcess, Env, RequestPath, RunChat, Scenario, ServeGenai, ServeHttpx,
                          Servers, paths, servers_unavailable)

COLUMNS = report.TABLES["serve"]
OVERHEAD_COLUMNS = dict(report.SUMMARIES["serve"])["overhead"]
PACED, BACK_TO_BACK = "paced", "back to back"
CLIENTS = (1, 2, 4)
#: Idle time before each paced request (see the module docstring).
PAUSE_S = 0.05
#: Idle time before each path's back-to-back turn, for the same reason.
SETTLE_S = 0.2
#: The server's request slots: more than any client count here, so no request gets 429.
MAX_CONCURRENT_REQUESTS = 16


def sizes(settings: common.Settings, scenario: Scenario) -> tuple[int, int, int]:
    """(paced requests per path, back-to-back requests per path and client count, rounds they are split into)."""
    if scenario.code:
        return settings.n(100, 3), settings.n(60, 4), settings.n(3, 1)
    return settings.n(200, 5), settings.n(120, 6), settings.n(3, 1)


class Tally:
    """Latencies, wall time, CPU and wrong answers per path, for one scenario and mode.

    CPU is counted around each unit of work (a paced request, a back-to-back turn), while
    no other path runs: this process's (the caller: its SDK, and for the in-process paths
    the loop and the sandbox's host side) and the server process's (its loop, HTTP, JSON
    and the sandbox's host side). Neither holds the zygote's and workers' CPU, the same
    work on every path that runs code. The server's CPU comes from /proc in 10 ms ticks:
    meaningful as a mean over many requests, not per request.
    """

    def __init__(self, started: list[RequestPath], record: common.Record, env: Env) -> None:
        self.times: dict[str, list[float]] = {p.name: [] for p in started}
        self.walls, self.bad = dict.fromkeys(self.times, 0.0), dict.fromkeys(self.times, 0)
        self.cpu = {name: [0.0, 0.0] for name in self.times}  # [this process, the server] in seconds
        self.errors: list[str] = record.extra.setdefault("errors", [])
        self.lock = threading.Lock()
        self.env = env

    @contextlib.contextmanager
    def counting(self, path: RequestPath) -> Iterator[None]:
        """Add the CPU used inside the block to ``path``; the wall time of a block of requests too."""
        mine, server, wall = time.process_time(), self.env.servers.server_cpu_s(), time.perf_counter()
        yield
        self.walls[path.name] += time.perf_counter() - wall
        self.cpu[path.name][0] += time.process_time() - mine
        self.cpu[path.name][1] += self.env.servers.server_cpu_s() - server

    def one(self, path: RequestPath, scenario: Scenario) -> None:
        """Time one request; a failed one is counted and named, the run goes on."""
        start = time.perf_counter()
        try:
            good = path.request(scenario)
        except Exception as exc:  # noqa: BLE001
            good = False
            with self.lock:
                self.errors.append(f"{path.name}: {type(exc).__name__}: {str(exc)[:200]}")
        with self.lock:
            self.times[path.name].append(time.perf_counter() - start)
            self.bad[path.name] += not good

    def rows(self, scenario: Scenario, mode: str, clients: int) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for name, latencies in self.times.items():
            stats, (mine, server) = common.stats(latencies), self.cpu[name]
            through_server = name in (ServeGenai.name, ServeHttpx.name)
            rows.append({"scenario": scenario.name, "mode": mode, "clients": clients, "path": name, "n": stats["n"],
                         "p50_ms": stats["p50_ms"], "p90_ms": stats["p90_ms"], "p99_ms": stats["p99_ms"],
                         "mean_ms": stats["mean_ms"], "bad": self.bad[name],
                         "requests_per_s": round(len(latencies) / self.walls[name], 1) if mode != PACED else None,
                         "cpu_ms": round((mine + server) * 1000 / len(latencies), 2),
                         "server_cpu_ms": round(server * 1000 / len(latencies), 2) if through_server else None})
        adapter = next((r for r in rows if r["path"] == RunChat.name), None)
        for row in rows:
            for key in ("p50_ms", "p99_ms"):
                row[f"vs_adapter_{key}"] = round(row[key] - adapter[key], 2) if adapter else None
        return rows


def _rotated(started: list[RequestPath], index: int) -> list[RequestPath]:
    first = index % len(started)
    return started[first:] + started[:first]


def paced(started: list[RequestPath], env: Env, scenario: Scenario, settings: common.Settings,
          record: common.Record) -> list[dict[str, Any]]:
    """One client; the paths take turns request by request, ``PAUSE_S`` before each."""
    tally = Tally(started, record, env)
    count = sizes(settings, scenario)[0]
    for index in range(count):
        for path in _rotated(started, index):
            time.sleep(PAUSE_S)
            with tally.counting(path):
                tally.one(path, scenario)
        if index % 20 == 19:
            record.extra["load_samples"].append(common.load()[0])
    return tally.rows(scenario, PACED, 1)


def back_to_back(started: list[RequestPath], env: Env, scenario: Scenario, clients: int,
                 settings: common.Settings, record: common.Record) -> list[dict[str, Any]]:
    """``clients`` threads per path without pause; the paths take turns in rounds."""
    tally = Tally(started, record, env)
    _, total, rounds = sizes(settings, scenario)
    for index in range(rounds):
        share = total // rounds + (index < total % rounds)
        for path in _rotated(started, index):
            time.sleep(SETTLE_S)
            with tally.counting(path):
                _hammer(tally, path, scenario, clients, share)
        record.extra["load_samples"].append(common.load()[0])
    return tally.rows(scenario, BACK_TO_BACK, clients)


def _hammer(tally: Tally, path: RequestPath, scenario: Scenario, clients: int, count: int) -> None:
    """``clients`` threads share ``count`` requests to ``path``."""
    tickets = iter(range(count))
    lock = threading.Lock()

    def client() -> None:
        while True:
            with lock:
                if next(tickets, None) is None:
                    return
            tally.one(path, scenario)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


#: (column prefix, path, path subtracted) of the overhead table.
DIFFERENCES = (("genai", ServeGenai.name, RunChat.name), ("httpx", ServeHttpx.name, RunChat.name),
               ("http_front_end", ServeHttpx.name, EngineInProcess.name))


def overhead(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The server's own cost per request, per request kind, mode and client count (see the module docstring)."""
    cell = {(r["scenario"], r["mode"], r["clients"], r["path"]): r for r in rows}
    found = []
    for group in dict.fromkeys((r["scenario"], r["mode"], r["clients"]) for r in rows):
        adapter = cell.get((*group, RunChat.name))
        row: dict[str, Any] = {"scenario": group[0], "mode": group[1], "clients": group[2],
                               "adapter_p50_ms": adapter["p50_ms"] if adapter else None}
        for label, path, base in DIFFERENCES:
            minuend, subtrahend = cell.get((*group, path)), cell.get((*group, base))
            for key in ("p50_ms", "p99_ms", "cpu_ms"):
                row[f"{label}_{key}"] = round(minuend[key] - subtrahend[key], 2) if minuend and subtrahend else None
        found.append(row)
    return found


def choose(settings: common.Settings) -> tuple[list[RequestPath], dict[str, str]]:
    """The paths ``--runners`` selects that can run here, and ``{name: why not}`` for the others."""
    chosen = [p for p in paths() if settings.wants(p.name)]
    skipped = {p.name: why for p in chosen if (why := p.unavailable() or servers_unavailable())}
    for name, why in skipped.items():
        print(f"skipping {name}: {why}", file=sys.stderr)
    return [p for p in chosen if p.name not in skipped], skipped


def start(chosen: list[RequestPath], stack: contextlib.ExitStack) -> Env:
    """The scripted model, the server and this process's Sandbox as far as ``chosen`` needs them, then the
    paths (warmed up); ``stack`` stops each of them, whatever happens after it started."""
    import sandbox
    servers = Servers()
    stack.callback(servers.stop)
    backend_url, serve_url = servers.start(MAX_CONCURRENT_REQUESTS,
                                           serve=any(isinstance(p, (ServeGenai, ServeHttpx)) for p in chosen))
    box = None
    if any(isinstance(p, (RunChat, EngineInProcess)) for p in chosen):
        box = stack.enter_context(sandbox.Sandbox(policy="default", image="vertex", cold_start=False))
    env = Env(backend_url, serve_url, box, servers)
    for path in chosen:
        path.start(env)
        stack.callback(path.close)
    for path in chosen:  # warm-up: imports, first connections, the first fork of each pool
        for scenario in SCENARIOS:
            path.request(scenario)
    return env


def run(settings: common.Settings) -> common.Record:
    record = common.Record("serve", settings)
    record.extra["load_samples"] = []
    started, record.extra["skipped"] = choose(settings)
    plan = [(scenario, mode, clients) for scenario in SCENARIOS
            for mode, clients in ((PACED, 1), *((BACK_TO_BACK, c) for c in CLIENTS[:2 if settings.quick else None]))]
    if started:
        with contextlib.ExitStack() as stack:
            env = start(started, stack)
            for scenario, mode, clients in common.progress(plan, len(plan), "serve"):
                record.rows += paced(started, env, scenario, settings, record) if mode == PACED else \
                    back_to_back(started, env, scenario, clients, settings, record)
            record.extra["served_requests"] = env.servers.access_log_lines()
    record.extra["overhead"] = overhead(record.rows)
    common.finish(record, COLUMNS, "Per request, the same scripted model (vs_adapter: minus in-process run_chat)")
    print(common.table(record.extra["overhead"], OVERHEAD_COLUMNS,
                       "The server's own overhead per request, ms: through sandbox serve - in-process "
                       "(genai/httpx: - run_chat; http_front_end: httpx - the server's loop in-process)"))
    return record


def plot(record: common.Record, settings: common.Settings) -> None:
    plt = common.pyplot()
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(18, 5))
    _latency_bars(left, record.rows)
    _overhead_bars(middle, record.extra.get("overhead") or overhead(record.rows))
    _throughput_lines(right, record.rows)
    common.save_figure(fig, settings, "serve")


def _latency_bars(ax: Any, rows: list[dict[str, Any]]) -> None:
    scenarios = list(dict.fromkeys(r["scenario"] for r in rows))
    names = list(dict.fromkeys(r["path"] for r in rows))
    cell = {(r["scenario"], r["path"]): r for r in rows if r["mode"] == PACED}
    common.grouped_bars(ax, scenarios, {n: [cell.get((s, n), {}).get("p50_ms") for s in scenarios] for n in names},
                        {n: [cell.get((s, n), {}).get("p99_ms") for s in scenarios] for n in names})
    ax.set_ylabel("ms per request, paced (bar p50, whisker p99; log)")
    ax.set_title("Latency per request, same scripted model")
    ax.legend(fontsize=7, loc="upper right")


def _overhead_bars(ax: Any, rows: list[dict[str, Any]]) -> None:
    short = {s.name: s.short for s in SCENARIOS}
    groups = [f"{short.get(r['scenario'], r['scenario'])}\n"
              + (r["mode"] if r["mode"] == PACED else f"{r['clients']} client{'s' if r['clients'] > 1 else ''}")
              for r in rows]
    labels = {"genai": "serve (genai) - run_chat", "httpx": "serve (httpx) - run_chat",
              "http_front_end": "serve (httpx) - loop in-process"}
    common.grouped_bars(ax, groups, {text: [r[f"{key}_p50_ms"] for r in rows] for key, text in labels.items()},
                        log=False)
    width = 0.8 / len(labels)
    for i, key in enumerate(labels):
        xs = [g + (i - (len(labels) - 1) / 2) * width for g in range(len(rows))]
        ax.scatter(xs, [r[f"{key}_p99_ms"] for r in rows], marker="_", s=120, color="black",
                   label="p99 difference" if i == 0 else None, zorder=3)
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set_yscale("symlog", linthresh=10)  # linear within +-10 ms, where the p50s are; p99s reach hundreds
    ax.grid(axis="y", which="both", alpha=0.3)
    ax.tick_params(axis="x", labelsize=7)
    ax.set_ylabel("ms per request (bar: p50 difference, dash: p99 difference; symlog)")
    ax.set_title("The server's own overhead per request")
    ax.legend(fontsize=7)


def _throughput_lines(ax: Any, rows: list[dict[str, Any]]) -> None:
    rows = [r for r in rows if r["mode"] == BACK_TO_BACK]
    scenarios = list(dict.fromkeys(r["scenario"] for r in rows))
    for name in dict.fromkeys(r["path"] for r in rows):
        line = None
        for scenario, style in zip(scenarios, ("-", "--")):
            mine = [r for r in rows if r["path"] == name and r["scenario"] == scenario]
            line, = ax.plot([r["clients"] for r in mine], [r["requests_per_s"] for r in mine], marker="o",
                            linestyle=style, color=line.get_color() if line else None)
    clients = sorted({r["clients"] for r in rows})
    ax.set_xscale("log", base=2)
    ax.set_xticks(clients)
    ax.set_xticklabels([str(c) for c in clients])
    ax.set_yscale("log")
    ax.set_xlabel("concurrent clients")
    ax.set_ylabel("requests per second (log; colours as on the left)")
    ax.set_title("Back to back: " + " / ".join(f"{s} ({style})" for s, style in zip(scenarios, ("solid", "dashed"))),
                 fontsize=9)
    ax.grid(which="both", alpha=0.3)
