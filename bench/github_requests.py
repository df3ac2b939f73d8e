"""GitHub REST requests per command on a warm bot (DESIGN.md §8: at most 6, whatever the files).

    .venv/bin/python bench/github_requests.py [--files 60]

Why count and not time: GitHub's secondary rate limits count requests (content-creating ones
above all), so the number of calls per command is what decides whether a busy team gets throttled.

The bot is the real `Opsbot` with `OPSBOT_FORGE=github`, pointed at the GitHub double on 127.0.0.1
(real bare repo behind GitHub's REST and smart-HTTP protocols). "Warm" means: the mirror is cloned
and fresh (younger than `OPSBOT_MIRROR_MAX_AGE`) and every command was planned once, so what is
counted is exactly what opening its PR costs. The repo is the sample fleet plus a cluster template
with `--files` files, to show the count does not grow with the number of files.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from opsbot.app import Opsbot  # noqa: E402
from opsbot.core.model import Actor  # noqa: E402
from opsbot.settings import Secret, Settings  # noqa: E402
from tests.doubles.github import GitHubDouble, serve_in_thread  # noqa: E402
from tests.repos import make_repo  # noqa: E402

BAR = 6
TOKEN = "ghp_bench_token"
BUNDLED = ROOT / "opsbot" / "templates" / "clusters" / "default"


def build_repo(dest: Path, files: int) -> Path:
    """The sample fleet, plus `templates/clusters/big/` (the bundled template and `files` more)."""
    repo = make_repo("fleet", dest)
    big = repo / "templates" / "clusters" / "big"
    shutil.copytree(BUNDLED, big)
    for i in range(files):
        (big / "apps" / f"config-{i:03d}.yaml").write_text(
            f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ${{CLUSTER_NAME}}-config-{i:03d}\n"
            f'  namespace: ${{NAMESPACE:=default}}\ndata:\n  index: "{i}"\n'
        )
    env = {
        "GIT_AUTHOR_NAME": "bench",
        "GIT_AUTHOR_EMAIL": "bench@invalid",
        "GIT_COMMITTER_NAME": "bench",
        "GIT_COMMITTER_EMAIL": "bench@invalid",
        "PATH": "/usr/bin:/bin",
    }
    subprocess.run(["git", "-C", str(repo), "add", "-A"], check=True, env=env)
    subprocess.run(
        ["git", "-C", str(repo), "commit", "-qm", "Add a big cluster template"], check=True, env=env
    )
    return repo


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=60, help="extra files in the big cluster template")
    args = parser.parse_args(argv)
    commands = [
        "scale frontend 5 in production",
        "promote frontend to production",
        "create cluster edge-9",
        "create cluster edge-10 from big",
        "scale frontend 5 in production",  # asked again: the open PR is the answer
    ]
    with tempfile.TemporaryDirectory(prefix="opsbot-bench-") as tmp_dir:
        tmp = Path(tmp_dir)
        src = build_repo(tmp / "fleet", args.files)
        double = GitHubDouble(tmp / "github", token=TOKEN)
        subprocess.run(["git", "-C", str(src), "push", "-q", str(double.repo.path), "main"], check=True)
        with serve_in_thread(double) as running:
            settings = Settings(
                forge="github",
                state_dir=str(tmp / "state"),
                github_api_url=running.api_url,
                github_repository=double.full_name,
                github_token=Secret(TOKEN),
                mirror_max_age_seconds=3600,
            )
            bot = Opsbot(settings)  # clones the mirror
            actor = Actor("alice", "alice", "cli")
            try:
                for command in set(commands):  # warm: every command planned once
                    bot.handle(command, actor, apply=False)
                rows: list[tuple[str, int, int, int, float, str]] = []
                for command in commands:
                    double.reset_log()
                    started = time.perf_counter()
                    result = bot.handle(command, actor)
                    elapsed = time.perf_counter() - started
                    files = len(getattr(getattr(result, "change", None), "edits", ()) or ())
                    pr = getattr(result, "pr", None)
                    if pr is None:
                        raise SystemExit(f"{command!r} opened no PR: {result.text()}")
                    rest = double.api_calls()
                    git = [r for r in double.requests if r.kind == "git"]
                    calls = ", ".join(f"{r.method} {_short(r.path)}" for r in rest)
                    label = command + (
                        "  (again)" if pr.created is False and command in [r[0] for r in rows] else ""
                    )
                    rows.append((label, files, len(rest), len(git), elapsed, calls))
            finally:
                bot.close()
    width = max(len(r[0]) for r in rows)
    print(f"{'command':<{width}}  files  REST  git  ms     requests")
    for label, files, rest_n, git_n, elapsed, calls in rows:
        print(f"{label:<{width}}  {files:>5}  {rest_n:>4}  {git_n:>3}  {elapsed * 1000:>5.0f}  {calls}")
    worst = max(r[2] for r in rows)
    verdict = "OK" if worst <= BAR else "OVER THE BAR"
    print(f"\nbar: at most {BAR} REST requests per command on a warm bot; worst {worst}: {verdict}")
    return 0 if worst <= BAR else 1


def _short(path: str) -> str:
    return path.split("/", 4)[-1] if path.startswith("/repos/") else path


if __name__ == "__main__":
    sys.exit(main())
