"""``python -m services.simulator [--host H] [--port P]``: run the provider simulator."""

from __future__ import annotations

import argparse

from services.simulator.server import run


def main() -> None:
    parser = argparse.ArgumentParser(description="IGW OpenAI-compatible provider simulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    args = parser.parse_args()
    run(args.host, args.port)


if __name__ == "__main__":
    main()
