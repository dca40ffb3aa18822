"""``python -m qmpd.demo`` (``make demo``): start a qmpd and run a short scripted QMP session.

Placeholder for the COLO fault-tolerance demo, which will replace it. Prints every
message exchanged, ``->`` for what the client sends and ``<-`` for what qmpd answers.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SCRIPT = [
    {"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}},
    {"execute": "query-version", "id": 1},
    {"execute": "query-status", "id": 2},
    {"execute": "human-monitor-command", "arguments": {"command-line": "info status"},
     "id": 3},
    {"execute": "query-kvm", "id": 4},
    {"execute": "no-such-command", "id": 5},
    {"execute": "quit", "id": 6},
]


def main() -> int:
    """Run the demo; returns the exit status of the qmpd it started."""
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "qmp.sock")
        proc = subprocess.Popen([sys.executable, "-m", "qmpd", "-name", "demo",
                                 "-qmp", f"unix:{path},server=on,wait=off"])
        deadline = time.monotonic() + 15
        while not os.path.exists(path):
            if proc.poll() is not None or time.monotonic() > deadline:
                print("qmpd did not start", file=sys.stderr)
                return 1
            time.sleep(0.05)
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(path)
            reader = sock.makefile("rb")
            print("<-", reader.readline().decode().rstrip())
            for request in SCRIPT:
                text = json.dumps(request)
                print("->", text)
                sock.sendall(text.encode())
                print("<-", reader.readline().decode().rstrip())
            for line in reader:  # the SHUTDOWN event, then EOF
                print("<-", line.decode().rstrip())
        status = proc.wait(10)
        print(f"qmpd exited with status {status}; socket removed: {not os.path.exists(path)}")
        return status


if __name__ == "__main__":
    raise SystemExit(main())
