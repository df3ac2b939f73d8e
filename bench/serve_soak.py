"""RSS soak: `opsbot serve` after 1,000 commands, sampled every 100 (goal: < 300 MB and flat).

    .venv/bin/python bench/serve_soak.py --fleet-apps 2500          # the 20k-manifest fleet
    .venv/bin/python bench/serve_soak.py --commands 1000 --batch 20

Sends signed `/ops deploy <app> <version> to <env>` commands (each plans, validates, opens a PR on
the local forge and posts a thread root) in concurrent batches, waits for each batch to be answered,
and prints the resident set size of the serve process and of its plan workers (from /proc) after
every 100 commands. Same setup as bench/slack_ack.py (Slack double, everything on 127.0.0.1).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from slack_ack import (
    BOT_TOKEN,
    SIGNING_SECRET,
    ThreadedSlackDouble,
    burst,
    commands,
    fleet_with_config,
    free_port,
    generate,
    wait_http,
)


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def children(pid: int) -> list[int]:
    """Direct child processes of `pid` (the plan workers), from /proc/*/stat."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--commands", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=20)
    ap.add_argument("--fleet-apps", type=int, default=0)
    ap.add_argument("--plan-workers", type=int, default=2)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="opsbot-bench-soak-"))
    if args.fleet_apps:
        repo = work / "fleet"
        generate(repo, args.fleet_apps)
    else:
        repo = fleet_with_config(work / "fleet")
    port = free_port()
    runner = ThreadedSlackDouble()
    double = runner.__enter__()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "OPSBOT_"))}
    env.update(OPSBOT_REPO=str(repo), SLACK_BOT_TOKEN=BOT_TOKEN, SLACK_SIGNING_SECRET=SIGNING_SECRET,
               SLACK_API_URL=double.api_url, OPSBOT_PORT=str(port), OPSBOT_HOST="127.0.0.1",
               OPSBOT_LOG_LEVEL="WARNING", OPSBOT_PLAN_WORKERS=str(args.plan_workers))
    log = (work / "serve.log").open("wb")
    proc = subprocess.Popen([str(Path(sys.executable).parent / "opsbot"), "serve"], env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/slack/events"
    print(f"load before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; plan workers: {args.plan_workers}")
    print(f"{'commands':>9} {'serve MB':>9} {'workers MB':>24} {'elapsed s':>10}")
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", proc, "opsbot serve")
        started = time.perf_counter()
        sent = 0
        peak = 0.0
        samples: list[float] = []
        while sent < args.commands:
            n = min(args.batch, args.commands - sent)
            before = sum(not m.is_reply for m in double.posted) + len(double.ephemeral)
            texts = commands(n, sent // args.batch, args.fleet_apps)
            runner.run(burst(url, double, texts))
            runner.wait_for(
                lambda before=before, n=n: sum(not m.is_reply for m in double.posted) + len(double.ephemeral)
                >= before + n,
                timeout=600,
                what="the batch",
            )
            sent += n
            if sent % 100 == 0 or sent == args.commands:
                main_mb = rss_mb(proc.pid)
                workers = [rss_mb(c) for c in children(proc.pid)]
                workers = [w for w in workers if w > 0]
                peak = max(peak, main_mb)
                samples.append(main_mb)
                print(f"{sent:>9} {main_mb:>9.0f} {' '.join(f'{w:.0f}' for w in workers):>24} "
                      f"{time.perf_counter() - started:>10.1f}", flush=True)
        growth = samples[-1] - samples[len(samples) // 2] if len(samples) > 1 else 0.0
        print(f"\nserve peak RSS {peak:.0f} MB (goal < 300 MB: {peak / 300:.2f} of it); "
              f"growth over the second half {growth:+.0f} MB")
        print(f"load after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        return 0
    finally:
        proc.terminate()
        proc.wait(60)
        log.close()
        runner.__exit__(None, None, None)


if __name__ == "__main__":
    sys.exit(main())
