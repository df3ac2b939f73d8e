"""`plan` on generated fleets of 20,000 and 60,000 manifests: cold, warm, in-process, and the ratio.

    python bench/plan_fleet.py [--apps 2500,7500] [--dir DIR] [--runs 5]

Figures (issue 12 goals in brackets):

* cold CLI: a new `opsbot plan` process with no cache files at all (index built from scratch) [< 4 s]
* warm CLI: a new `opsbot plan` process after an earlier one left the commit's index [< 0.8 s]
* warm 60k / warm 20k: the same warm CLI figure on three times the fleet [<= 1.25]
* in-process warm: a plan of another app in a process that already planned one (what a running
  `serve` worker pays) [< 0.15 s], and of the same app again (its base render is cached)
* peak RSS of the CLI process (and of its kubectl child)

Each measurement runs in its own process. Child processes run without PYTHONDONTWRITEBYTECODE so
they use compiled bytecode, as a pip-installed opsbot does (pip compiles at install time); the
first, unmeasured run writes it. Note the machine's load (printed) when reading the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generate_fleet import app_name, generate

ROOT = Path(__file__).resolve().parents[1]

PROBE = r"""
import json, resource, sys, time
from commands import REGISTRY
from opsbot.manifests.gitrepo import GitRepo
from opsbot.manifests.planner import Planner
repo = GitRepo(sys.argv[1])
first, others, again = json.loads(sys.argv[2])
t = time.perf_counter()
planner = Planner(repo, "main")
planner.plan(REGISTRY.parse(first)[1])
out = {"first": time.perf_counter() - t, "other": [], "same": []}
def cpu():
    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime
cpus = []
for cmd in others:
    t, c = time.perf_counter(), cpu()
    planner.plan(REGISTRY.parse(cmd)[1])
    out["other"].append(time.perf_counter() - t)
    cpus.append(cpu() - c)
out["other_cpu"] = sorted(cpus)[len(cpus) // 2]
for cmd in again:
    t = time.perf_counter()
    planner.plan(REGISTRY.parse(cmd)[1])
    out["same"].append(time.perf_counter() - t)
repo.close()
out["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
"""


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPSBOT_", "GITHUB_", "SLACK_"))}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPATH"] = str(ROOT)
    return env


def clear_caches(repo: Path) -> None:
    for p in (repo / ".git" / "opsbot").glob("cache.sqlite3*"):
        p.unlink()


def cli(repo: Path, command: str) -> tuple[float, float, float]:
    """(wall s, CPU s of the process and its children, peak RSS MB) of one `opsbot plan` process."""
    t = time.perf_counter()
    proc = subprocess.run(
        ["/usr/bin/time", "-f", "%M %U %S", sys.executable, "-m", "opsbot", "plan", command, "--repo", str(repo)],
        capture_output=True, text=True, check=False, env=child_env(), cwd=ROOT,
    )
    elapsed = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"opsbot plan failed: {proc.stderr}")
    rss_kb, user, system = (float(x) for x in proc.stderr.strip().splitlines()[-1].split())
    return elapsed, user + system, rss_kb / 1024


def probe(repo: Path, first: str, others: list[str], again: list[str]) -> dict[str, object]:
    proc = subprocess.run([sys.executable, "-c", PROBE, str(repo), json.dumps([first, others, again])],
                          capture_output=True, text=True, check=True, env=child_env(), cwd=ROOT)
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def measure(base: Path, apps: int, runs: int) -> dict[str, float]:
    repo = base / f"fleet-{apps}"
    if repo.exists():
        shutil.rmtree(repo)
    generate(repo, apps)
    files = sum(1 for _ in (repo / "apps").rglob("*.yaml"))
    command = f"deploy {app_name(1)} 7.0.0 to production"
    cli(repo, command)  # writes bytecode; not measured
    clear_caches(repo)
    cold, cold_cpu, cold_rss = cli(repo, command)
    warm, warm_cpu, rss = [], [], [cold_rss]
    for i in range(runs):
        t, c, r = cli(repo, f"deploy {app_name((i * 37) % apps)} 9.9.{i} to production")
        warm.append(t)
        warm_cpu.append(c)
        rss.append(r)
    others = [f"deploy {app_name(i)} 8.8.8 to production" for i in (11, 222, apps // 2, apps - 3)]
    again = [f"deploy {app_name(1)} 7.7.{i} to production" for i in range(3)]
    inproc = probe(repo, command, others, again)
    out = {
        "files": files,
        "cold": cold,
        "cold_cpu": cold_cpu,
        "warm": statistics.median(warm),
        "warm_cpu": statistics.median(warm_cpu),
        "inproc_other": statistics.median(inproc["other"]),  # type: ignore[arg-type]
        "inproc_same": statistics.median(inproc["same"]),  # type: ignore[arg-type]
        "rss": max(rss),
    }
    print(f"{files:>7} files  cold CLI {cold:6.2f} s ({cold_cpu:5.2f} CPU s)  warm CLI {out['warm']:6.2f} s "
          f"({out['warm_cpu']:5.2f} CPU s, median of {runs})  in-process other app {out['inproc_other']:6.3f} s "
          f"({inproc['other_cpu']:.3f} CPU s)  same app {out['inproc_same']:6.3f} s  "
          f"peak RSS {out['rss']:5.0f} MB   load {load()}", flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--apps", default="2500,7500", help="fleet sizes in apps (8 manifests each)")
    ap.add_argument("--dir", help="where to generate (default: a temp dir)")
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    base = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="opsbot-bench-"))
    sizes = [int(a) for a in args.apps.split(",")]
    print(f"load before: {load()}")
    results = [measure(base, apps, args.runs) for apps in sizes]
    small, big = results[0], results[-1]
    print("\nfigure (wall time; CPU seconds beside it, less sensitive to a loaded machine)")
    print(f"warm CLI plan, {small['files']:.0f} files: {small['warm']:.2f} s ({small['warm_cpu']:.2f} CPU s); "
          f"goal < 0.8 s: measured/goal {small['warm'] / 0.8:.2f} ({small['warm_cpu'] / 0.8:.2f} by CPU)")
    if len(results) > 1:
        ratio = big["warm"] / small["warm"]
        cpu_ratio = big["warm_cpu"] / small["warm_cpu"]
        print(f"warm {big['files']:.0f} / warm {small['files']:.0f}: {ratio:.2f} ({cpu_ratio:.2f} by CPU); goal <= 1.25")
    print(f"cold CLI plan, {small['files']:.0f} files: {small['cold']:.2f} s ({small['cold_cpu']:.2f} CPU s); "
          f"goal < 4 s: measured/goal {small['cold'] / 4:.2f} ({small['cold_cpu'] / 4:.2f} by CPU)")
    print(f"in-process warm plan (other app): {small['inproc_other']:.3f} s; goal < 0.15 s: "
          f"measured/goal {small['inproc_other'] / 0.15:.2f}")
    print(f"peak RSS (CLI)                            {max(r['rss'] for r in results):7.0f} MB < 300 MB")
    if not args.dir:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
