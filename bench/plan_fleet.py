"""`plan` on a generated fleet of ~20,000 manifests: cold and warm time and peak RSS (DESIGN §8).

    python bench/plan_fleet.py [--apps 2500] [--dir DIR] [--runs 5]

Bars: warm under 1 s in-process (under 2 s as a whole CLI process), cold under 10 s, peak RSS under
300 MB. "Cold" is a fresh process with no cache files; "warm in-process" is the second plan in the
same process (a running bot); "warm CLI" is a new `opsbot plan` process after an earlier one left its
per-commit caches in the repo's git dir. Each measurement runs in its own process so RSS is its own.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generate_fleet import generate  # noqa: E402

PROBE = r"""
import json, resource, sys, time
t0 = time.perf_counter()
from commands import REGISTRY
from opsbot.manifests.gitrepo import GitRepo
from opsbot.manifests.planner import Planner
repo = GitRepo(sys.argv[1])
planner = Planner(repo, "main")
out = {}
for label, first, second in json.loads(sys.argv[2]):
    t = time.perf_counter()
    planner.plan(REGISTRY.parse(first)[1])
    cold = time.perf_counter() - t
    t = time.perf_counter()
    planner.plan(REGISTRY.parse(second)[1])
    out[label] = {"first": cold, "warm": time.perf_counter() - t}
out["total"] = time.perf_counter() - t0
out["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
out["children_rss_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(json.dumps(out))
"""


def clear_caches(repo: Path) -> None:
    for p in (repo / ".git" / "opsbot").glob("cache.sqlite3*"):
        p.unlink()


def probe(repo: Path, cases: list[tuple[str, str, str]]) -> dict[str, object]:
    proc = subprocess.run([sys.executable, "-c", PROBE, str(repo), json.dumps(cases)], capture_output=True,
                          text=True, check=True)
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def cli(repo: Path, command: str) -> tuple[float, float]:
    t = time.perf_counter()
    proc = subprocess.run(
        ["/usr/bin/time", "-f", "%M", sys.executable, "-m", "opsbot", "plan", command, "--repo", str(repo)],
        capture_output=True, text=True, check=False,
    )
    elapsed = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"opsbot plan failed: {proc.stderr}")
    rss_kb = float(proc.stderr.strip().splitlines()[-1])
    return elapsed, rss_kb / 1024


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--apps", type=int, default=2500)
    ap.add_argument("--dir", help="where to generate (default: /dev/shm if present, else a temp dir)")
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    base = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(dir="/dev/shm" if Path("/dev/shm").is_dir() else None))
    repo = base / "fleet"
    if repo.exists():
        shutil.rmtree(repo)
    generate(repo, args.apps)
    files = sum(1 for p in (repo / "apps").rglob("*.yaml"))
    print(f"fleet: {files} manifest files, {args.apps} apps x 3 envs ({repo})")

    cases = [
        ("scale", "scale payments-worker 7 in production", "scale payments-worker 8 in production"),
        ("promote", "promote payments-api to production", "promote ledger-api to production"),
    ]
    print(f"{'command':<10}{'cold process s':>16}{'warm in-process s':>20}{'warm CLI s (median)':>22}"
          f"{'peak RSS MB':>13}")
    for label, first, second in cases:
        clear_caches(repo)
        cold = probe(repo, [(label, first, second)])  # fresh process, no caches: import + index + plan
        clear_caches(repo)
        cli(repo, first)  # an earlier command leaves the per-commit caches, as on a warm machine
        times, rss = [], []
        for _ in range(args.runs):
            t, r = cli(repo, first)
            times.append(t)
            rss.append(r)
        peak = max(max(rss), float(cold["rss_mb"]), float(cold["children_rss_mb"]))  # type: ignore[arg-type]
        warm = cold[label]["warm"]  # type: ignore[index]
        print(f"{label:<10}{cold['total']:>16.2f}{warm:>20.3f}{statistics.median(times):>22.2f}{peak:>13.0f}")
    print("bars: cold < 10 s, warm in-process < 1 s, warm CLI < 2 s, peak RSS < 300 MB "
          "(RSS: the larger of the Python process and its kubectl child)")
    if not args.dir:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
