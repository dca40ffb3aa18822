"""``qmpd-check-stream``: check the counter guest's output stream for gaps, repeats and
bad sums, from a file or from the serial socket it is coming out of.

Usage (also ``python -m qmpd.tools.check_stream``)::

    qmpd-check-stream [--guest SPEC] [--start N] [--seconds S] [--records N] SOURCE

SOURCE is a file (``-`` for standard input), ``unix:PATH`` or ``tcp:HOST:PORT`` (a qmpd
``-serial`` socket: the tool connects as a client and reads until the socket closes,
``--seconds`` have passed (default 5) or ``--records`` complete records arrived). SPEC is
the ``-guest`` value the guest was started with (default ``counter``); the sums depend on
its ``wss`` and ``dirty``. ``--start N`` also requires the first record to be ``seq=N``.
A final partial line (a capture cut mid-record) is ignored.

Prints ``SOURCE: <report>`` and a verdict; exit status 0 when the stream is intact, 1
when it has a gap, a repeat, a bad sum or a malformed line (or holds no record), 2 when
SOURCE cannot be read or an argument is wrong.

Users: people running qmpd, the demo, tests (:func:`check_stream`).
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
from pathlib import Path

from qmpd.errors import ConfigError
from qmpd.machine.config import parse_guest
from qmpd.machine.guest_check import StreamReport, verify_stream
from qmpd.options import AddressError, SocketAddress, parse_address

PROG = "qmpd-check-stream"


def check_stream(data: bytes, guest: str = "counter", start: int | None = None) -> StreamReport:
    """Verify a stream of the counter guest started with ``-guest guest``.

    A final partial line (a reader cut mid-record) is ignored.

    :raise MachineConfigError: if ``guest`` is not a valid ``-guest`` value.
    """
    cfg = parse_guest(guest)
    return verify_stream(data.split(b"\n")[:-1], d=cfg.dirty_pages, w=cfg.ws_pages,
                         start=start)


def read_socket(address: SocketAddress, seconds: float, records: int | None) -> bytes:
    """Read from a stream socket until EOF, ``seconds`` or ``records`` complete lines.

    :raise OSError: if the connection fails.
    """
    if address.kind == "unix":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(seconds)
        sock.connect(address.path)
    else:
        sock = socket.create_connection((address.host or "localhost", address.port), seconds)
    data = bytearray()
    lines = 0
    deadline = time.monotonic() + seconds
    with sock:
        while records is None or lines < records:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            sock.settimeout(left)
            try:
                chunk = sock.recv(1 << 16)
            except TimeoutError:
                break
            if not chunk:
                break
            data += chunk
            lines += chunk.count(b"\n")
    end = -1
    for _ in range(records or 0):  # keep exactly the first `records` lines
        end = data.find(b"\n", end + 1)
    if end >= 0:
        del data[end + 1:]
    return bytes(data)


def read_source(source: str, seconds: float, records: int | None) -> bytes:
    """The bytes of SOURCE: a file, ``-`` (standard input), ``unix:PATH`` or ``tcp:H:P``.

    :raise ConfigError: for a bad socket address. :raise OSError: if it cannot be read.
    """
    if source.startswith(("unix:", "tcp:")):
        return read_socket(parse_address(source), seconds, records)
    if source == "-":
        return sys.stdin.buffer.read()
    return Path(source).read_bytes()


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``qmpd-check-stream``; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog=PROG, description="Check the counter guest's output stream (seq=<n> sum=<hex> "
        "records) for gaps, repeats and bad sums.")
    parser.add_argument("source", metavar="SOURCE",
                        help="a file, - (standard input), unix:PATH or tcp:HOST:PORT")
    parser.add_argument("--guest", default="counter", metavar="SPEC",
                        help="the -guest value the guest runs with (default: counter)")
    parser.add_argument("--start", type=int, metavar="N",
                        help="the first record must be seq=N")
    parser.add_argument("--seconds", type=float, default=5.0, metavar="S",
                        help="from a socket: stop reading after S seconds (default 5)")
    parser.add_argument("--records", type=int, metavar="N",
                        help="from a socket: stop after N complete records")
    args = parser.parse_args(argv)
    try:
        parse_guest(args.guest)
        data = read_source(args.source, args.seconds, args.records)
    except AddressError as err:
        print(f"{PROG}: {args.source}: {err.reason}", file=sys.stderr)
        return 2
    except ConfigError as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"{PROG}: {args.source}: {err.strerror or err}", file=sys.stderr)
        return 2
    report = check_stream(data, args.guest, args.start)
    print(f"{args.source}: {report}")
    if report.ok and report.records:
        print("INTACT: no gap, no repeat, checksums valid")
        return 0
    print("BROKEN" if report.records else "BROKEN: no complete record")
    return 1


if __name__ == "__main__":
    sys.exit(main())
