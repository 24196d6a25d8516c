"""`python -m hodei.agent`: the agent that local workers run, started without the CLI.

The `hodei agent` command is for people; a provider starting hundreds of agents wants them
connected fast, and importing the CLI (typer, click, rich) costs ~140 ms of every start. The
server gives these agents everything in the environment (HODEI_SERVER_URL, HODEI_TOKEN and, with
TLS, HODEI_CA and HODEI_ENROLL_URL) and only --slots and --label on the command line.
"""

from __future__ import annotations

import argparse
import os
import sys


def parse(argv: list[str] | None) -> tuple[int, dict[str, str]]:
    parser = argparse.ArgumentParser(prog="python -m hodei.agent")
    parser.add_argument("--slots", type=int, default=1)
    parser.add_argument("--label", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    if args.slots < 1:
        parser.error("--slots must be at least 1")
    labels: dict[str, str] = {}
    for item in args.label:
        key, sep, value = item.partition("=")
        if not sep or not key:
            parser.error(f"--label wants KEY=VALUE, not {item!r}")
        labels[key] = value
    return args.slots, labels


def main(argv: list[str] | None = None) -> int:
    slots, labels = parse(argv)
    server, otp = os.environ.get("HODEI_SERVER_URL", ""), os.environ.get("HODEI_TOKEN", "")
    if not server or not otp:
        print("error: HODEI_SERVER_URL and HODEI_TOKEN must be set", file=sys.stderr)
        return 2
    from hodei.agent.main import run_agent

    ca, enroll_url = os.environ.get("HODEI_CA", ""), os.environ.get("HODEI_ENROLL_URL", "")
    ca_pem = os.environ.get("HODEI_CA_PEM", "")  # containers get the CA itself, not a path
    image = os.environ.get("HODEI_WORKER_IMAGE", "")  # a provider started it in a job's image
    try:
        return run_agent(
            server, otp, labels, slots, ca=ca, enroll_url=enroll_url, ca_pem=ca_pem, image=image
        )
    except OSError as exc:
        print(f"error: cannot start the agent: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
