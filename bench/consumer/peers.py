"""Peers for the consumer benchmark: an nginx target (C, one worker) and Confluent Parallel Consumer
(Java, ``peer/PcHttpSink.java``), plus /proc readers for CPU time and peak RSS. Standard library only.

    .venv/bin/python bench/consumer/peers.py     # self-check of the nginx target
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FETCH_PC = ROOT / "scripts" / "fetch-parallel-consumer.sh"
NGINX = "/usr/sbin/nginx"
ECHO_MODULE_CANDIDATES = (Path("/usr/lib/nginx/modules/ngx_http_echo_module.so"),
                          Path("/usr/share/nginx/modules/ngx_http_echo_module.so"))
LOCATIONS = ("fast", "slow", "stuck")
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid``, all its threads included (not its children)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()  # fields from 3 (state) on
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime (14), stime (15)


def process_rss_peak_mb(pid: int) -> float:
    """Peak resident set size (VmHWM) of process ``pid`` in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        if int(stat[stat.rindex(")") + 2:].split()[1]) == pid:
            out.append(int(d.name))
    return out


def echo_module_path() -> Path:
    """Debian's ngx_http_echo_module.so (package libnginx-mod-http-echo)."""
    for p in ECHO_MODULE_CANDIDATES:
        if p.exists():
            return p
    avail = Path("/usr/share/nginx/modules-available/mod-http-echo.conf")
    if avail.exists():  # "load_module modules/ngx_http_echo_module.so;" relative to nginx's prefix
        rel = avail.read_text().split("load_module", 1)[1].split(";", 1)[0].strip()
        for base in (Path("/usr/lib/nginx"), Path("/usr/share/nginx")):
            if (base / rel).exists():
                return base / rel
    raise FileNotFoundError("nginx echo module not found: install libnginx-mod-http-echo "
                            "(scripts/apt-packages.txt)")


NGINX_CONF = """\
# lagpilot consumer-bench target; own prefix {prefix}, not the Debian service
worker_processes 1;
daemon off;
master_process on;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
load_module {echo_module};
events {{ worker_connections 4096; }}
http {{
    access_log off;
    default_type text/plain;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    client_body_buffer_size 64k;
    client_max_body_size 1m;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    tcp_nodelay on;
    # one byte per served request ("x" + the newline nginx adds), unbuffered: count = size / 2
    log_format lp_count 'x';
    server {{
        listen 127.0.0.1:{port};
        location = /fast {{
            access_log {prefix}/count-fast.log lp_count;
            return 200 "ok\\n";
        }}
        location = /slow {{
            access_log {prefix}/count-slow.log lp_count;
            echo_read_request_body;
            echo_sleep 0.02;
            echo ok;
        }}
        # 400 for one key (the bench's stuck key), 200 at once for every other
        location = /stuck {{
            access_log {prefix}/count-stuck.log lp_count;
            if ($http_x_lagpilot_key = "key-7") {{
                return 400 "rejected\n";
            }}
            return 200 "ok\n";
        }}
        location = /nginx_status {{
            stub_status;
        }}
    }}
}}
"""


@dataclass
class NginxTarget:
    """One nginx (master + 1 worker) on 127.0.0.1: ``/fast`` answers 200 at once, ``/slow`` after
    20 ms; both read the POST body and count served requests (:meth:`count`)."""

    workdir: Path
    port: int
    proc: subprocess.Popen[bytes]
    _log: Path = field(repr=False)

    @classmethod
    def start(cls, workdir: Path) -> NginxTarget:
        """Write ``workdir/nginx.conf``, start nginx in the foreground and wait until it answers."""
        workdir = Path(workdir).resolve()
        (workdir / "tmp").mkdir(parents=True, exist_ok=True)
        port = _free_port()
        conf = workdir / "nginx.conf"
        conf.write_text(NGINX_CONF.format(prefix=workdir, port=port, echo_module=echo_module_path()))
        log = workdir / "nginx.out"
        with open(log, "wb") as out:
            proc = subprocess.Popen([NGINX, "-p", f"{workdir}/", "-c", str(conf), "-e", str(workdir / "error.log")],
                                    stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        t = cls(workdir, port, proc, log)
        deadline = time.monotonic() + 15
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"nginx exited with {proc.returncode}:\n{_tail(log)}\n"
                                   f"{_tail(workdir / 'error.log')}")
            try:
                t.requests_total()
                return t
            except OSError as e:
                if time.monotonic() > deadline:
                    t.stop()
                    raise TimeoutError(f"nginx did not answer on port {port}:\n"
                                       f"{_tail(workdir / 'error.log')}") from e
                time.sleep(0.05)

    def url(self, location: str) -> str:
        """``http://127.0.0.1:PORT/fast`` for ``location`` "fast" (or "/fast")."""
        return f"http://127.0.0.1:{self.port}/{location.strip('/')}"

    def count(self, location: str) -> int:
        """Requests served so far at ``location`` ("fast" or "slow"); each is logged once answered."""
        name = location.strip("/")
        if name not in LOCATIONS:
            raise ValueError(f"no counted location {location!r}; one of {LOCATIONS}")
        try:
            return (self.workdir / f"count-{name}.log").stat().st_size // 2
        except FileNotFoundError:
            return 0

    def requests_total(self) -> int:
        """All requests nginx has handled (stub_status), these status requests included."""
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            c.request("GET", "/nginx_status")
            body = c.getresponse().read().decode()
        finally:
            c.close()
        return int(body.splitlines()[2].split()[2])  # " accepts handled requests" -> requests

    def pids(self) -> list[int]:
        """The master's pid and its workers'."""
        return [self.proc.pid, *_children(self.proc.pid)] if self.proc.poll() is None else []

    def cpu_seconds(self) -> float:
        """User + system CPU seconds of the master and its workers so far."""
        total = 0.0
        for pid in self.pids():
            try:
                total += process_cpu_seconds(pid)
            except (OSError, ValueError):
                pass
        return total

    def stop(self, timeout: float = 10.0) -> None:
        """Fast shutdown (SIGTERM to the master), then SIGKILL to master and workers if it lingers."""
        if self.proc.poll() is not None:
            return
        workers = _children(self.proc.pid)
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            for pid in [self.proc.pid, *workers]:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.proc.wait(5)


@lru_cache(maxsize=1)
def parallel_consumer_classpath() -> str:
    """The java classpath of PcHttpSink: resolves/compiles through scripts/fetch-parallel-consumer.sh
    (quick when warm); its last stdout line."""
    out = subprocess.run(["bash", str(FETCH_PC)], check=True, stdout=subprocess.PIPE, text=True).stdout
    return out.strip().splitlines()[-1]


def start_parallel_consumer(bootstrap: str, topic: str, group: str, threads: int, url: str,
                            ordering: str = "KEY", log_path: Path | None = None,
                            timeout: float = 60.0) -> subprocess.Popen[bytes]:
    """Start PcHttpSink (``java -Xmx512m``, stdout and stderr to ``log_path``, a temp file if None) and
    wait for its "pc ready" line. Stop it with SIGTERM (``proc.terminate()``)."""
    cp = parallel_consumer_classpath()
    if log_path is None:
        fd, name = tempfile.mkstemp(prefix="pc-http-sink-", suffix=".log")
        os.close(fd)
        log_path = Path(name)
    argv = ["java", "-Xmx512m", "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
            "-Dorg.slf4j.simpleLogger.logFile=System.err", "-cp", cp, "PcHttpSink",
            "--bootstrap", bootstrap, "--topic", topic, "--group", group, "--threads", str(threads),
            "--url", url, "--ordering", ordering.upper()]
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while True:
        try:
            if b"pc ready" in Path(log_path).read_bytes():
                return proc
        except OSError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"PcHttpSink exited with {proc.returncode} before it was ready; "
                               f"{log_path}:\n{_tail(Path(log_path))}")
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait(10)
            raise TimeoutError(f"PcHttpSink not ready after {timeout:.0f}s; {log_path}:\n"
                               f"{_tail(Path(log_path))}")
        time.sleep(0.1)


def _post_many(port: int, path: str, n: int, body: bytes) -> float:
    """POST ``n`` times on one keep-alive connection; seconds taken. Raises on a non-200."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    t0 = time.perf_counter()
    try:
        for i in range(n):
            c.request("POST", path, body=body, headers={"X-Lagpilot-Partition": str(i % 12),
                                                         "X-Lagpilot-Offset": str(i)})
            r = c.getresponse()
            r.read()
            if r.status != 200:
                raise RuntimeError(f"POST {path} answered {r.status}")
            if r.getheader("Connection", "").lower() == "close":
                raise RuntimeError(f"POST {path}: nginx closed the keep-alive connection")
    finally:
        c.close()
    return time.perf_counter() - t0


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="lagpilot-nginx-") as tmp:
        t = NginxTarget.start(Path(tmp))
        try:
            body = b"v" * 100
            fast_s = _post_many(t.port, "/fast", 1000, body)
            slow_s = _post_many(t.port, "/slow", 100, body)
            time.sleep(0.1)
            print(f"nginx on {t.url('')} pids {t.pids()}")
            print(f"/fast: {t.count('fast')} counted (sent 1000), {fast_s * 1000 / 1000:.3f} ms each")
            print(f"/slow: {t.count('slow')} counted (sent 100), {slow_s * 1000 / 100:.1f} ms each (want ~20)")
            print(f"stub_status requests: {t.requests_total()}; nginx cpu {t.cpu_seconds():.2f}s; "
                  f"master peak rss {process_rss_peak_mb(t.proc.pid):.1f} MiB")
            ok = t.count("fast") == 1000 and t.count("slow") == 100 and 18 <= slow_s * 10 <= 35
        finally:
            t.stop()
        print("ok" if ok else "FAILED")
        raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
