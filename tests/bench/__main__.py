"""
`make bench`: every benchmark, each next to its baseline, as a table on stdout
and JSON in var/bench/results.json.

    python -m tests.bench                 # everything (several minutes)
    python -m tests.bench --quick         # smaller sizes, for a smoke run
    python -m tests.bench --only poller   # one group: poller, trigger, history
"""

import argparse
import json
import platform
import time

from tests.bench.common import BENCH_DIR, print_table, setup_django


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    parser.add_argument("--only", choices=["poller", "trigger", "history"], action="append")
    args = parser.parse_args()
    groups = args.only or ["poller", "trigger", "history"]
    setup_django()
    from django.db import connection

    results: dict = {
        "database": connection.vendor,
        "machine": f"{platform.machine()}, {platform.python_implementation()} "
        f"{platform.python_version()}",
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    if "poller" in groups:
        from tests.bench import bench_poller

        open_runs = 500 if args.quick else 2000
        results["poll_throughput"] = bench_poller.throughput(open_runs)
        _show("Poll throughput (one sweep process)", results["poll_throughput"])
        results["poll_throughput_20ms"] = bench_poller.throughput(
            open_runs, rounds=1, latency_ms=20
        )
        _show("Poll throughput, Champ answering in 20 ms", results["poll_throughput_20ms"])
        results["poll_latency"] = bench_poller.latency(200 if args.quick else 1000)
        _show("Status latency (real qcluster, changes every few seconds)", results["poll_latency"])
        if not args.quick:
            results["poll_latency_2000"] = bench_poller.latency(2000)
            _show("Status latency, 2,000 open runs", results["poll_latency_2000"])
        scale = bench_poller.scale_out(open_runs)
        if scale:
            results["scale_out"] = scale
            _show("Scale-out (PostgreSQL + Redis)", scale)
            if not args.quick:
                results["poll_latency_2000_two_clusters"] = bench_poller.latency(2000, clusters=2)
                _show(
                    "Status latency, 2,000 open runs, two clusters",
                    results["poll_latency_2000_two_clusters"],
                )
    if "trigger" in groups:
        try:
            from tests.bench import bench_trigger
        except ImportError:
            bench_trigger = None
        if bench_trigger:
            results["trigger"] = bench_trigger.run(50 if args.quick else 200)
            _show("Trigger overhead (one-click run vs the simulator's POST)", results["trigger"])
    if "history" in groups:
        try:
            from tests.bench import bench_history
        except ImportError:
            bench_history = None
        if bench_history:
            sizes = (10_000, 100_000) if args.quick else (10_000, 1_000_000)
            results["history"] = bench_history.run(sizes=sizes)
            for row in results["history"]:
                _show(f"History pages at {row.get('runs', '?'):,} runs", row)
    out = BENCH_DIR / f"results-{connection.vendor}.json"
    out.write_text(json.dumps(results, indent=2, default=str))
    print(f"\nResults written to {out}")


def _show(title: str, data: dict) -> None:
    print_table(title, [("metric", "value"), *((k, v) for k, v in data.items())])


if __name__ == "__main__":
    main()
