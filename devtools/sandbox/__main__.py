"""`python -m devtools.sandbox`: serve every vendor sandbox on loopback ports.

Teams use it for staging and demos. It is a dev tool, so it lives here and not in the
product's CLI: the wheel and the container image carry no sandbox.
"""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
import threading
from collections.abc import Sequence

import yaml

from devtools.sandbox.fleet import MEMBERS, SECRETS, SandboxFleet


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGTERM/SIGINT, printing the `vendors:` config section and the
    environment a worker needs to use the sandboxes."""
    args = _parser().parse_args(argv)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    with SandboxFleet(
        job_seconds=args.job_seconds, latency_seconds=args.latency_ms / 1000
    ) as fleet:
        for identity_type, value in (tuple(seed.split("=", 1)) for seed in args.seed):
            fleet.seed(identity_type, value)
        print("# vendor sandboxes serving; put this in the worker's config:")
        print(yaml.safe_dump({"vendors": fleet.vendors_config()}, sort_keys=False), end="")
        print("# and export these (sandbox credentials, not secrets):")
        for name, value in SECRETS.items():
            print(f"export {name}={shlex.quote(value)}")
        sys.stdout.flush()
        stop.wait()
    return 0


def _seed(value: str) -> str:
    if "=" not in value:
        raise argparse.ArgumentTypeError("use TYPE=VALUE, e.g. email=jane@example.com")
    return value


def _latency(value: str) -> float:
    try:
        milliseconds = float(value)
    except ValueError:
        milliseconds = -1.0
    if not 0 <= milliseconds <= 60_000:
        raise argparse.ArgumentTypeError("use milliseconds from 0 to 60000, e.g. 150")
    return milliseconds


def _seeded_types() -> list[str]:
    return sorted({identity_type for member in MEMBERS.values() for identity_type in member.seeds})


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.sandbox",
        description="Serve strict sandboxes of every vendor API on loopback ports.",
    )
    parser.add_argument("--job-seconds", type=float, default=5.0, help="how long vendor jobs take")
    parser.add_argument(
        "--latency-ms",
        type=_latency,
        default=0.0,
        help="answer every call this late, as a vendor in another region (e.g. 150)",
    )
    parser.add_argument(
        "--seed",
        action="append",
        default=[],
        type=_seed,
        metavar="TYPE=VALUE",
        help=f"an identifier the vendors hold ({', '.join(_seeded_types())}); repeatable",
    )
    return parser


if __name__ == "__main__":
    sys.exit(main())
