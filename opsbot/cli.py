"""`opsbot` on the command line: plan, run, prs, merge, init, check, testdrive, serve.

Scriptable by contract (DESIGN §3): `--json` prints one object; errors exit non-zero with one line
on stderr.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from opsbot.core.model import Actor
from opsbot.core.results import Failure, Info, NoChange, Result
from opsbot.errors import CommandError, ConfigError, OpsbotError
from opsbot.settings import Settings, load_settings


def _settings(args: argparse.Namespace, **extra: Any) -> Settings:
    repo = getattr(args, "repo", None)
    return load_settings(file=getattr(args, "settings", None), repo=repo, **extra)


def _actor(args: argparse.Namespace) -> Actor:
    who = getattr(args, "as_user", None) or os.environ.get("OPSBOT_USER") or getpass.getuser()
    return Actor(who, who, "cli")


def _emit(result: Result, as_json: bool) -> int:
    if isinstance(result, Failure):
        print(f"opsbot: {result.text()}", file=sys.stderr)
        return 3 if result.denied else 1
    if as_json:
        print(json.dumps(result.as_json(), default=str, indent=2))
    else:
        print(result.text())
    return 0


def _bot(args: argparse.Namespace) -> Any:
    from opsbot.app import Opsbot

    return Opsbot(_settings(args))


def cmd_plan(args: argparse.Namespace, apply: bool) -> int:
    from commands import REGISTRY

    try:
        command, _ = REGISTRY.parse(args.command)
    except CommandError as exc:
        print(f"opsbot: {exc}", file=sys.stderr)
        return 2
    if not apply and command.kind == "request":
        print(f'opsbot: `plan` only computes changes; use `opsbot run "{args.command}"`.', file=sys.stderr)
        return 2
    bot = _bot(args)
    try:
        return _emit(bot.handle(args.command, _actor(args), apply=apply), args.json)
    finally:
        bot.close()


def cmd_prs(args: argparse.Namespace) -> int:
    bot = _bot(args)
    try:
        prs = bot.forge.list_prs(args.state)
        rows = []
        for pr in prs:
            req = bot.store.find_request_by_pr(bot.forge.name, pr.number)
            rows.append(
                {
                    "number": pr.number,
                    "state": pr.state,
                    "branch": pr.branch,
                    "base": pr.base_branch,
                    "title": pr.title,
                    "url": pr.url,
                    "request": req.id if req else None,
                    "request_state": str(req.state) if req else None,
                    "merge_sha": pr.merge_sha or None,
                }
            )
        if args.json:
            print(json.dumps(rows, indent=2))
        elif not rows:
            print(f"No {args.state} PRs.")
        else:
            for r in rows:
                print(
                    f"#{r['number']:<4} {r['state']:<7} {r['request'] or '-':<5} {r['title']}  ({r['branch']})"
                )
        return 0
    finally:
        bot.close()


def cmd_merge(args: argparse.Namespace) -> int:
    args.command = f"merge {args.ref}"
    return cmd_plan(args, apply=True)


def cmd_init(args: argparse.Namespace) -> int:
    from opsbot.manifests.config import CONFIG_FILE, discover, render_config
    from opsbot.manifests.gitrepo import GitRepo

    repo = GitRepo(args.repo)
    target = Path(args.repo) / CONFIG_FILE
    if target.exists() and not args.force:
        print(f"opsbot: {target} exists; use --force to overwrite.", file=sys.stderr)
        return 1
    snap = repo.snapshot(repo.default_branch())
    try:
        text = render_config(discover(snap))
        done = f"# written to {target}; commit it to pin the layout."
    except ConfigError as exc:
        from opsbot.manifests.discovery import render_skeleton, scan

        text = render_skeleton(scan(snap, inventory=True), exc.args[0] if exc.args else str(exc))
        done = (
            f"# discovery could not decide, so {target} is a commented skeleton of what it found: "
            "edit it, then run `opsbot check`."
        )
    target.write_text(text)
    print(text, end="")
    print(done, file=sys.stderr)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from opsbot.manifests.gitrepo import GitRepo
    from opsbot.manifests.index import Index

    repo = GitRepo(args.repo)
    index = Index(repo, repo.default_branch())
    problems = 0
    print(f"config: {'.opsbot.yaml' if index.config.from_file else 'discovered (no .opsbot.yaml)'}")
    for env in index.config.envs.values():
        where = f"branch {env.branch}: " if env.branch else ""
        print(
            f"env {env.name}: {where}{', '.join(env.paths)}"
            + (f" (found by {env.found_by})" if not index.config.from_file else "")
        )
        snap = index.env_snapshot(env)
        for root in env.paths:
            try:
                kind = index.root_kind(snap, root)
            except CommandError as exc:
                problems += 1
                print(f"  ❌ {root or '.'}: {exc.message}")
                continue
            if kind == "kustomize":
                try:
                    objs = index.render(snap, root)
                    print(f"  ✅ {root}: kustomize build, {len(objs)} objects")
                except CommandError as exc:
                    problems += 1
                    print(f"  ❌ {root}: {exc.message}")
            elif kind == "helm":
                chart_dir, chart = index.helm_chart(env, snap, root)
                print(f"  ✅ {root}: Helm values of chart {chart} ({chart_dir or 'not in this repo'})")
            else:
                print(f"  ✅ {root}: {kind}")
        try:
            apps = index.apps_in(env)
        except CommandError as exc:
            problems += 1
            print(f"  ❌ apps: {exc.message}")
            continue
        print(f"  apps: {', '.join(apps) or 'none'}")
        aliases = index.aliases_in(env, apps)
        if aliases:
            print(f"  aliases: {', '.join(f'{a} → {w}' for a, w in aliases.items())}")
    for chain in index.config.chains():
        print(f"promotion: {' → '.join(chain)}")
    for note in index.config.notes:
        print(f"ℹ️ {note}")
    envs = list(index.config.envs.values())
    # branch-per-env: the same path on two branches is two sets of files
    readers = {
        (e.branch, p): [o.name for o in envs if o.branch == e.branch and p in o.paths]
        for e in envs
        for p in e.paths
    }
    for (_, p), names in readers.items():
        if len(names) > 1:
            # The standard Flux layout: infrastructure every cluster applies. opsbot refuses edits there
            # (they would change several envs at once), which is a fact to show, not a fault.
            print(f"ℹ️ {p} is shared by {', '.join(names)}; opsbot changes it for no single env.")
    for e in envs:
        if e.paths and all(len(readers[(e.branch, p)]) > 1 for p in e.paths):
            problems += 1
            print(f"❌ every path of {e.name} is shared with another env; opsbot cannot change {e.name} alone.")
    print("ok" if not problems else f"{problems} problem(s)")
    return 0 if not problems else 1


def cmd_testdrive(args: argparse.Namespace) -> int:
    from opsbot.app import Opsbot
    from opsbot.chat.console import Console, make_sample_repo, walkthrough
    from opsbot.manifests.config import CONFIG_FILE, discover, render_config
    from opsbot.manifests.gitrepo import GitRepo

    dest = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="opsbot-testdrive-")) / "fleet"
    make_sample_repo(dest)
    repo = GitRepo(str(dest))
    (dest / CONFIG_FILE).write_text(render_config(discover(repo.snapshot("main"))))
    os.system(
        f"git -C '{dest}' add {CONFIG_FILE} && git -C '{dest}' commit -qm 'Pin opsbot config (opsbot init)'"
    )
    repo.close()
    print(f"Sample fleet repo: {dest}  (production needs 1 approval; see {dest / CONFIG_FILE})")
    bot = Opsbot(load_settings(environ={}, repo=str(dest)))
    console = Console(bot)
    interactive = sys.stdin.isatty() and not args.no_input

    def pause(step: str) -> None:
        if interactive:
            input(f"\n[{step} — press Enter] ")
        else:
            print(f"\n# {step}")

    walkthrough(console, pause)
    if interactive:
        print("\nYour turn. Type commands as in Slack (`help`), `/as bob` to switch user, Ctrl-D to quit.")
        user = "alice"
        for line in sys.stdin:
            line = line.strip()
            if line.startswith("/as "):
                user = line[4:].strip() or user
                continue
            if line:
                console.say(line, user=user)
    bot.close()
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from opsbot.logs import setup_logging
    from opsbot.server import serve

    settings = _settings(args)
    setup_logging(settings)
    return serve(settings)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="opsbot", description="Chat commands become minimal, validated GitOps PRs."
    )
    parser.add_argument("--settings", help="settings YAML file (also OPSBOT_SETTINGS_FILE)")
    sub = parser.add_subparsers(dest="cmd", required=True)

    def repo_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--repo",
            default=os.environ.get("OPSBOT_REPO", "."),
            help="manifest repo (default: OPSBOT_REPO or .)",
        )

    for name, helptext in (
        ("plan", "compute and validate a change; touch nothing"),
        ("run", "plan, then open the PR"),
    ):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("command", help='e.g. "scale frontend 5 in production"')
        repo_arg(p)
        p.add_argument("--json", action="store_true")
        p.add_argument("--as", dest="as_user", help="who is asking (default: OPSBOT_USER or your login)")
    p = sub.add_parser("prs", help="list PRs opened by opsbot")
    repo_arg(p)
    p.add_argument("--state", default="open", choices=["open", "merged", "closed", "all"])
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("merge", help='merge a request\'s PR (same as run "merge R")')
    p.add_argument("ref", help="request id (R7) or PR number")
    repo_arg(p)
    p.add_argument("--json", action="store_true")
    p.add_argument("--as", dest="as_user")
    p = sub.add_parser("init", help="write .opsbot.yaml from what discovery finds")
    repo_arg(p)
    p.add_argument("--force", action="store_true")
    p = sub.add_parser("check", help="lint the repo layout and config; build every kustomize env")
    repo_arg(p)
    p = sub.add_parser("testdrive", help="try opsbot on a sample repo with no credentials")
    p.add_argument("--dir", help="where to create the sample repo (default: a temp dir)")
    p.add_argument("--no-input", action="store_true", help="run the walkthrough without pauses or prompt")
    sub.add_parser("serve", help="run the bot: Slack, webhooks, /healthz, /metrics")

    args = parser.parse_args(argv)
    logging.basicConfig(level=os.environ.get("OPSBOT_LOG_LEVEL", "WARNING"), stream=sys.stderr)
    try:
        if args.cmd == "plan":
            return cmd_plan(args, apply=False)
        if args.cmd == "run":
            return cmd_plan(args, apply=True)
        handlers = {
            "prs": cmd_prs,
            "merge": cmd_merge,
            "init": cmd_init,
            "check": cmd_check,
            "testdrive": cmd_testdrive,
            "serve": cmd_serve,
        }
        return handlers[args.cmd](args)
    except (CommandError, ConfigError) as exc:
        print(f"opsbot: {exc}", file=sys.stderr)
        return 2
    except OpsbotError as exc:
        print(f"opsbot: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


__all__ = ["Info", "NoChange", "main"]
