"""A small code-execution service: POST a Python snippet, get what it printed.

    sudo .venv/bin/python examples/code_runner.py [--port 8080] [--pool 4]
    curl -s localhost:8080/run --data-binary 'print(sum(range(10)))'
    {"stdout": "45\\n", "stderr": "", "exit_code": 0, "timed_out": false, "oom_killed": false, ...}

Only the standard library and capsa: http.server (a thread per request) and a capsa.Pool of warm
sandboxes over the host's own python3 (capsa.HostTools()), each snippet in a sandbox of its own
with 2 s of wall time, 256 MB of memory, 64 processes and 64 KB of output. The snippet is the
sandbox's stdin: nothing of it touches the host's disk.
"""

from __future__ import annotations

import argparse
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import capsa

MAX_SNIPPET = 1 << 20


class Handler(BaseHTTPRequestHandler):
    pool: capsa.Pool

    def do_POST(self) -> None:
        if self.path != "/run":
            self.send_error(404)
            return
        length = int(self.headers.get("Content-Length") or 0)
        if not 0 < length <= MAX_SNIPPET:
            self.send_error(413 if length else 411)
            return
        snippet = self.rfile.read(length)
        result = self.pool.run(["python3", "-"], stdin=snippet, timeout=2, output_limit="64K")
        body = json.dumps({
            "stdout": result.stdout.decode(errors="replace"), "stderr": result.stderr.decode(errors="replace"),
            "exit_code": result.exit_code, "signal": result.signal, "timed_out": result.timed_out,
            "oom_killed": result.oom_killed, "output_truncated": result.output_truncated,
            "wall_time": result.wall_time, "cpu_time": result.cpu_time, "peak_memory": result.peak_memory,
        }).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:
        pass  # quiet: one line per snippet is noise


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--pool", type=int, default=4)
    args = parser.parse_args()
    with capsa.Pool(args.pool, rootfs=capsa.HostTools(), memory="256M", pids=64) as pool:
        Handler.pool = pool
        server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
        print(f"listening on http://127.0.0.1:{server.server_port}/run", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
