"""Run the service in a subprocess on a free loopback port, and always stop it.

Tests, the notebook and the benchmark use it the same way::

    with ServerProcess(env={"COURSE_SERVE_BATCH_WINDOW_MS": "0"}) as server:
        httpx.get(server.url + "/health")

The server's output goes to a temporary log file (``server.log()``), so a chatty server can never
block on a full pipe; a server that does not answer ``/health`` in time, or exits, raises
``RuntimeError`` with the end of that log.
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class ServerProcess:
    """``python -m course_serve`` on 127.0.0.1 and a free port; a context manager."""

    def __init__(self, env: dict | None = None, workers: int = 1, start_timeout: float = 120):
        self.env = {**os.environ, **{k: str(v) for k, v in (env or {}).items()}}
        self.env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(ROOT), self.env.get("PYTHONPATH")])
        )
        self.workers, self.start_timeout = workers, start_timeout
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process, self.saved_log = None, ""
        self.log_file = tempfile.NamedTemporaryFile("w+", prefix="course_serve.", suffix=".log")

    def start(self) -> "ServerProcess":
        command = [sys.executable, "-m", "course_serve", "--port", str(self.port),
                   "--workers", str(self.workers), "--log-level", "warning"]  # fmt: skip
        self.process = subprocess.Popen(command, env=self.env, stdout=self.log_file,
                                        stderr=subprocess.STDOUT)  # fmt: skip
        atexit.register(self.stop)  # a notebook kernel or script that exits stops it too
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self) -> None:
        import httpx

        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with code {self.process.returncode}:\n"
                                   f"{self.log()[-2000:]}")  # fmt: skip
            try:
                if httpx.get(self.url + "/health/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"the server did not answer within {self.start_timeout} s:\n"
                           f"{self.log()[-2000:]}")  # fmt: skip

    def log(self) -> str:
        """What the server printed so far (kept after the server stopped)."""
        if not self.log_file.closed:
            self.log_file.flush()
            self.saved_log = Path(self.log_file.name).read_text(errors="replace")
        return self.saved_log

    def stop(self, timeout: float = 15) -> int | None:
        """SIGINT (uvicorn's graceful shutdown), then SIGKILL if it takes longer than timeout."""
        atexit.unregister(self.stop)  # stopped: nothing left for interpreter exit to do
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(5)

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        self.log()
        self.log_file.close()
