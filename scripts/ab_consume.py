"""A/B the daemon's CPU per message between source trees, on one bench setup.

This shared machine's speed drifts by half between runs, so a change to the message path is
judged here, not by two separate runs of bench/consume.py: the daemon runs from each tree in
turn (the order alternating every round) against the same broker vhost, database, sandbox
and venues, each tree put first on PYTHONPATH, and the median of each tree's rounds is
printed as one JSON object per tree (rate and CPU milliseconds per message: its process,
the sandbox, PostgreSQL and RabbitMQ).

    git worktree add /tmp/before HEAD~1
    .venv/bin/python scripts/ab_consume.py /tmp/before . [--messages 3000] [--rounds 6]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import consume  # noqa: E402  (bench/consume.py: the setup and the daemon round)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trees", nargs="+", help="source trees (a checkout's root) to compare")
    parser.add_argument("--messages", type=int, default=3000, help="messages per round and tree")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--venues", type=int, default=100)
    parser.add_argument("--mode", choices=("full", "incremental"), default="full", help="the pulls' mode")
    args = parser.parse_args()
    args.trees = [os.path.abspath(t) for t in args.trees]
    return args


async def main(args: argparse.Namespace) -> None:
    trees: list[str] = args.trees
    bench = consume.Bench(argparse.Namespace(
        messages=args.messages, rounds=args.rounds, backlog=0, venues=args.venues, rss_seconds=0, mode=args.mode
    ))
    base_env = dict(bench.env)
    results: dict[str, list[tuple[float, dict[str, float]]]] = {t: [] for t in trees}
    try:
        await bench.setup()
        for round_no in range(args.rounds):
            for tree in trees if round_no % 2 == 0 else trees[::-1]:
                bench.env = {**base_env, "PYTHONPATH": tree}
                rate, cpu = await bench.daemon_rate()
                results[tree].append((rate, cpu))
                print(f"round {round_no + 1}: {tree} {rate:.0f} msg/s, process {cpu['process']:.3f} ms",
                      file=sys.stderr, flush=True)
    finally:
        bench.env = base_env
        await bench.teardown()
    for tree, runs in results.items():
        print(json.dumps({
            "tree": tree,
            "msgs_per_s": round(statistics.median(rate for rate, _ in runs), 1),
            "cpu_ms_per_msg": {k: round(statistics.median(cpu[k] for _, cpu in runs), 3) for k in runs[0][1]},
        }))


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
