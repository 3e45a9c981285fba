"""The demo's HTTP target as its own process: a RecordingTarget that checks per-key order and writes its
figures to a JSON file every half second, so the demo (and a person with `cat`) can read them and the
target outlives the demo when the lab is kept running."""

from __future__ import annotations

import argparse
import json
import os
import signal
import threading
import time
from pathlib import Path

from lagpilot.testing.target import RecordingTarget


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lagpilot.testing.demo_target")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--stats-file", required=True)
    parser.add_argument("--latency-ms", type=float, default=2.0)
    args = parser.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    target = RecordingTarget(args.host, args.port, latency_s=args.latency_ms / 1000).start()
    out = Path(args.stats_file)
    marks = out.with_name("run.json")  # the demo's current run: where its records start, per partition
    while not stop.is_set():
        stats = target.stats()
        try:
            run = json.loads(marks.read_text())
            start = {int(p): int(o) for p, o in run["from"].items()}
            stats["run"] = run.get("id")
        except (OSError, ValueError, KeyError):
            start = {}
        stats["this_run_distinct"] = len({(a.partition, a.offset) for a in target.accepted()
                                          if a.offset >= start.get(a.partition, 0)})
        violations = target.order_violations()
        doc = {**stats, "url": target.url, "port": target.port, "order_violations": len(violations),
               "first_violations": violations[:5], "updated": time.time(), "pid": os.getpid()}
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc))
        tmp.replace(out)
        stop.wait(0.5)
    target.stop()


if __name__ == "__main__":
    main()
