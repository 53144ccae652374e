"""Command line: run a fake provider until SIGINT/SIGTERM.

``python -m cross_instance.testing.fakeprovider --port 0 --rpm 600 --burst 10 --latency 0.05
--headers openai`` prints ``listening on http://127.0.0.1:PORT`` (flushed) and exits 0 on a
signal. Bad arguments give a one-line ``error: ...`` on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType
from typing import NoReturn

from cross_instance.testing.fakeprovider.headers import HEADER_STYLES
from cross_instance.testing.fakeprovider.server import FakeProvider, Latency


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message}\n")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port 0..65535, got {text!r}")
    return value


def _latency(text: str) -> Latency:
    try:
        parts = [float(p) for p in text.split(",")]
    except ValueError:
        parts = []
    if len(parts) == 1 and parts[0] >= 0:
        return parts[0]
    if len(parts) == 2 and 0 <= parts[0] <= parts[1]:
        return (parts[0], parts[1])
    raise argparse.ArgumentTypeError(f"expected SECONDS or LO,HI with 0 <= LO <= HI, got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the command."""
    p = _Parser(prog="python -m cross_instance.testing.fakeprovider",
                description="Local fake LLM provider with exact rate limits.")
    p.add_argument("--host", default="127.0.0.1", help="loopback address (default 127.0.0.1)")
    p.add_argument("--port", type=_port, default=0, help="port, 0 = any free one")
    p.add_argument("--rpm", type=_positive, default=600, help="requests per minute")
    p.add_argument("--burst", type=_positive, default=10, help="request bucket size")
    p.add_argument("--tpm", type=_positive, default=None, help="tokens per minute (off)")
    p.add_argument("--token-burst", type=_positive, default=None, help="token bucket size")
    p.add_argument("--latency", type=_latency, default=0.0, help="seconds, or LO,HI")
    p.add_argument("--headers", choices=HEADER_STYLES, default="openai",
                   help="rate-limit header style")
    p.add_argument("--no-retry-after", action="store_true", help="omit Retry-After on 429")
    p.add_argument("--seed", type=int, default=0, help="seed for random latency")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the server until SIGINT/SIGTERM; return the exit status."""
    args = build_parser().parse_args(argv)
    if args.token_burst is not None and args.tpm is None:
        build_parser().error("--token-burst needs --tpm")
    try:
        fake = FakeProvider(
            requests_per_minute=args.rpm, burst=args.burst, tokens_per_minute=args.tpm,
            token_burst=args.token_burst, latency_s=args.latency, header_style=args.headers,
            retry_after=not args.no_retry_after, host=args.host, port=args.port, seed=args.seed,
        )
        fake.start()
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    done = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    print(f"listening on {fake.url}", flush=True)
    try:
        while not done.wait(0.5):
            pass
    finally:
        fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
