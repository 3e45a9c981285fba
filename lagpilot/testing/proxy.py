"""A real HTTP proxy for tests: Debian's tinyproxy (forwarding plain http, tunnelling https with CONNECT),
on a free loopback port, in the foreground, stopped by its pid."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from lagpilot.lab.proc import free_port


class TinyProxy:
    def __init__(self, workdir: Path, port: int | None = None) -> None:
        exe = shutil.which("tinyproxy")
        if exe is None:
            raise RuntimeError("tinyproxy is not installed (scripts/apt-packages.txt; make bootstrap installs it)")
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.log_path = workdir / "tinyproxy.log"
        conf = workdir / "tinyproxy.conf"
        # No ConnectPort line: CONNECT to any port (the test targets listen on ephemeral ones).
        conf.write_text(f'Port {self.port}\nListen 127.0.0.1\nTimeout 30\nLogFile "{self.log_path}"\n'
                        f'LogLevel Info\nMaxClients 64\nAllow 127.0.0.1\nViaProxyName "lagpilot-test-proxy"\n')
        self.proc = subprocess.Popen([exe, "-d", "-c", str(conf)], stdout=subprocess.DEVNULL,
                                     stderr=open(workdir / "tinyproxy.stderr", "wb"))  # noqa: SIM115
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"tinyproxy did not start: {self.log()[-500:]}") from None
                time.sleep(0.1)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> TinyProxy:
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
