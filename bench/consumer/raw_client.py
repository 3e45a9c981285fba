"""The raw ceiling: lagpilot's own HTTP client (``HttpClient.send``, same headers, same body size) on
``--threads`` threads, no Kafka, for ``--seconds``. Rate is measured at the target."""

from __future__ import annotations

import argparse
import threading
import time

from lagpilot_consumer.config import parse
from lagpilot_consumer.delivery import HttpClient, Record


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--value-bytes", type=int, default=100)
    ap.add_argument("--connection", default="pooled")
    args = ap.parse_args()
    cfg = parse(["--bootstrap-servers", "unused:1", "--topic", "t", "--group-id", "g", "--target-url", args.url,
                 "--partitions", "0", "--connection", args.connection], {})
    stop = time.monotonic() + args.seconds
    value = b"x" * args.value_bytes

    def run(i: int) -> None:
        client = HttpClient(cfg)
        n = 0
        while time.monotonic() < stop:
            a = client.send(Record("t", i % 12, n, f"key-{i}-{n % 97}".encode(), value, int(time.time() * 1000)))
            assert a.status == 200, a
            n += 1

    threads = [threading.Thread(target=run, args=(i,)) for i in range(args.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


if __name__ == "__main__":
    main()
