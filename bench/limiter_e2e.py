"""Three real daemons against the sandbox, several times over (prints one JSON object).

Runs tests/e2e/test_ratelimit_replicas.py (three `run` processes, one Stripe test-mode
account, 25/s, given 40 push jobs of 12 records at once, 400 calls asked for in the first
instant; a second venue's 25-record job beside it) ``--runs`` times and gathers the numbers
each run prints from the sandbox's calls log: the most calls in any sliding one-second window
over the quota, the 429 fraction, utilisation of the quota while the busy account had work,
deliveries the limiter deferred (waits over its 10 s bound), and the quiet venue's job time.

    python bench/limiter_e2e.py [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
TEST = "tests/e2e/test_ratelimit_replicas.py"
QUOTA = 25


def one_run() -> tuple[dict[str, Any] | None, bool]:
    """(the numbers the test printed, whether it passed)."""
    done = subprocess.run(
        [str(REPO / ".venv" / "bin" / "pytest"), "-q", "-s", "-p", "no:cacheprovider", TEST],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    numbers = None
    for line in done.stdout.splitlines():
        if line.startswith("{\"publish_s\""):
            numbers = json.loads(line)
    return numbers, done.returncode == 0


def summary(values: list[float]) -> dict[str, float]:
    return {"min": round(min(values), 4), "median": round(statistics.median(values), 4),
            "max": round(max(values), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    runs = [one_run() for _ in range(args.runs)]
    found = [n for n, _ in runs if n is not None]
    if not found:
        sys.exit("no run printed its numbers")
    busy = [n["busy"] for n in found]
    print(json.dumps({
        "runs": args.runs, "passed": sum(ok for _, ok in runs), "quota_per_s": QUOTA, "daemons": 3,
        "busy_calls": summary([b["calls"] for b in busy]),
        "max_window_over_quota_admitted": summary([b["max_window"] / QUOTA for b in busy]),
        "max_window_over_quota_all_arrivals": summary([b["max_window_all"] / QUOTA for b in busy]),
        "fraction_429": summary([b["throttled"] / b["calls"] for b in busy]),
        "utilisation": summary([b["utilisation"] for b in busy]),
        "busy_span_s": summary([b["span_s"] for b in busy]),
        "mean_limiter_wait_s": summary([n["mean_limiter_wait_s"] for n in found]),
        "deliveries_deferred": summary([n["deliveries_deferred_by_limiter"] for n in found]),
        "busy_attempts_over_jobs": summary([n["busy_attempts"] / 40 for n in found]),
        "quiet_job_s": summary([n["quiet_job_s"] for n in found]),
        "quiet_max_window_over_quota": summary([n["quiet"]["max_window_all"] / QUOTA for n in found]),
    }, indent=2))


if __name__ == "__main__":
    main()
