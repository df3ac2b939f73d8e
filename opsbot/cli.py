"""`opsbot` on the command line: plan, run, prs, merge, audit, init, check, testdrive, serve.

Scriptable by contract (DESIGN §3): `--json` prints one object, errors included
(`{"error", "kind"}`); errors exit 2 (refused) or 3 (internal) with one line on stderr.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

from opsbot.chat.texts import plain
from opsbot.core.model import Actor
from opsbot.core.results import Failure, Info, NoChange, Proposed, Result
from opsbot.errors import CommandError, ConfigError, OpsbotError
from opsbot.settings import Settings, load_settings


def _settings(args: argparse.Namespace, **extra: Any) -> Settings:
    repo = getattr(args, "repo", None)
    return load_settings(file=getattr(args, "settings", None), repo=repo, **extra)


def _actor(args: argparse.Namespace) -> Actor:
    who = getattr(args, "as_user", None) or os.environ.get("OPSBOT_USER") or getpass.getuser()
    return Actor(who, who, "cli")


#: Exit codes (README, "Scripting the CLI"): a refusal (bad input, a denied or refused change, a
#: config error) is 2 and an internal error (opsbot's fault, see the log) is 3, so a script can
#: tell "fix what you asked" from "retry or report". `check` uses 1 for "problems found".
EXIT_REFUSED = 2
EXIT_INTERNAL = 3


def _fail(message: str, kind: str, as_json: bool, **extra: Any) -> int:
    """One line on stderr always; under --json also `{"error", "kind", ...}` on stdout."""
    text = plain(message)
    print(f"opsbot: {text}", file=sys.stderr)
    if as_json:
        print(json.dumps({"error": text, "kind": kind, **extra}, default=str, indent=2))
    return EXIT_REFUSED if kind == "refused" else EXIT_INTERNAL


def _emit(result: Result, as_json: bool) -> int:
    if isinstance(result, Failure):
        if result.reference:
            return _fail(result.text(), "internal", as_json, reference=result.reference)
        return _fail(result.text(), "refused", as_json, denied=result.denied)
    # Slack markup (`<@bob>`) is for Slack; a terminal gets `@bob`. A proposal is printed as is:
    # its diff must be byte-exact.
    exact = isinstance(result, Proposed)
    if as_json:
        out = result.as_json()
        if not exact and isinstance(out.get("text"), str):
            out["text"] = plain(out["text"])
        print(json.dumps(out, default=str, indent=2))
    else:
        print(result.text() if exact else plain(result.text()))
    return 0


def _bot(args: argparse.Namespace) -> Any:
    from opsbot.app import Opsbot

    settings = _settings(args)
    if settings.forge == "local":
        _need_repo(settings.repo)
    return Opsbot(settings)


def _need_repo(path: str) -> None:
    """A missing or non-Git `--repo` is the person's to fix (a refusal), not opsbot's fault."""
    if not Path(path).is_dir():
        raise CommandError(f"{path} is not a directory: point --repo (or OPSBOT_REPO) at the manifest repo.")
    inside = subprocess.run(["git", "-C", path, "rev-parse", "--git-dir"], capture_output=True, check=False)
    if inside.returncode != 0:
        raise CommandError(f"{path} is not a Git repository: point --repo (or OPSBOT_REPO) at the manifest repo.")


def cmd_plan(args: argparse.Namespace, apply: bool) -> int:
    from commands import REGISTRY

    try:
        command, _ = REGISTRY.parse(args.command)
    except CommandError as exc:
        return _fail(str(exc), "refused", args.json)
    if not apply and command.kind in ("request", "policy"):
        return _fail(f'`plan` only computes changes; use `opsbot run "{args.command}"`.', "refused", args.json)
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


def cmd_audit(args: argparse.Namespace) -> int:
    """The whole audit log (or a slice) for auditors and scripts: JSON or CSV on stdout."""
    import csv

    from commands._policy import parse_since

    since = parse_since(args.since) if args.since else None
    bot = _bot(args)
    try:
        rows = [
            r.as_dict()
            for r in bot.store.audit_list(app=args.app, env=args.env, since=since, limit=args.limit)
        ]
    finally:
        bot.close()
    if args.csv:
        writer = csv.DictWriter(
            sys.stdout,
            fieldnames=["id", "at", "actor", "action", "request", "pr", "app", "env", "reason", "detail"],
            lineterminator="\n",
        )
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    elif args.json:
        print(json.dumps(rows, indent=2))
    else:
        for row in rows:
            print(
                f"{row['at']} {row['action']:<10} {row['actor']:<12} {row['request'] or '-':<5} "
                f"{row['app'] or '-'}/{row['env'] or '-'} {row['reason'] or ''} {row['detail'] or ''}".rstrip()
            )
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    args.command = f"merge {args.ref}"
    return cmd_plan(args, apply=True)


def cmd_init(args: argparse.Namespace) -> int:
    from opsbot.manifests.config import CONFIG_FILE, discover, render_config
    from opsbot.manifests.gitrepo import GitRepo
    from opsbot.manifests.paths import write_inside

    repo = GitRepo(args.repo)
    target = Path(args.repo) / CONFIG_FILE
    if target.is_symlink():
        print(f"opsbot: {target} is a symbolic link; opsbot does not write through links.", file=sys.stderr)
        return 2
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
    write_inside(Path(args.repo), CONFIG_FILE, text)
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


#: The agent the testdrive pretends to be: Flux's `flux-system/apps` Kustomization for production.
TESTDRIVE_AGENT = {"kind": "flux", "name": "apps", "namespace": "flux-system"}


def cmd_testdrive(args: argparse.Namespace) -> int:
    import asyncio
    import secrets

    import yaml

    from opsbot.app import Opsbot
    from opsbot.chat.console import Console, make_sample_repo, walkthrough
    from opsbot.intake.loopback import deliver_flux_event, flux_success_event
    from opsbot.manifests.config import CONFIG_FILE, discover, render_config
    from opsbot.manifests.gitrepo import GitRepo

    dest = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="opsbot-testdrive-")) / "fleet"
    make_sample_repo(dest)
    repo = GitRepo(str(dest))
    rendered = render_config(discover(repo.snapshot("main")))
    config = yaml.safe_load(rendered)
    config["environments"]["production"]["agent"] = dict(TESTDRIVE_AGENT)
    head = "".join(line for line in rendered.splitlines(keepends=True) if line.startswith("#"))
    (dest / CONFIG_FILE).write_text(head + yaml.safe_dump(config, sort_keys=False))
    for git_args in (["add", "--", CONFIG_FILE], ["commit", "-qm", "Pin opsbot config (opsbot init)"]):
        # an argv list, never a shell: `--dir` is whatever the person typed (quotes, `;`, `$(...)`)
        subprocess.run(["git", "-C", str(dest), *git_args], check=True, capture_output=True)
    repo.close()
    print(f"Sample fleet repo: {dest}  (production needs 1 approval; see {dest / CONFIG_FILE})")
    # a fresh secret per run: the Flux event below is signed and checked like a real one
    settings = load_settings(environ={}, repo=str(dest), flux_webhook_secret=secrets.token_hex(16),
                             deploy_channel="deploys")
    bot = Opsbot(settings)
    console = Console(bot)
    interactive = sys.stdin.isatty() and not args.no_input
    piped = not sys.stdin.isatty() and not args.no_input

    def pause(step: str) -> None:
        if interactive:
            input(f"\n[{step} — press Enter] ")
        else:
            print(f"\n# {step}")

    def reconcile(request_id: str) -> None:
        """Play Flux: a signed success event for the merge commit, then what opsbot posts for it."""
        request = bot.store.get_request(request_id)
        if request is None or not request.merge_sha:
            return
        pause("Flux applies the merge commit in production and reports it to opsbot's /webhooks/flux")
        event = flux_success_event(name=TESTDRIVE_AGENT["name"], namespace=TESTDRIVE_AGENT["namespace"],
                                   revision=f"main@sha1:{request.merge_sha}")
        status = asyncio.run(deliver_flux_event(bot, settings, event))
        console.emit(f"flux> POST /webhooks/flux (Kustomization flux-system/apps applied "
                     f"{request.merge_sha[:7]}, signed) → HTTP {status}")
        asyncio.run(console.deliver_outbox())

    walkthrough(console, pause, after_merge=reconcile)
    if interactive:
        print("\nYour turn. Type commands as in Slack (`help`), `/as bob` to switch user, Ctrl-D to quit.")
    elif piped:
        print("\n# commands from stdin")
    if interactive or piped:
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


#: C0 and C1 control characters (but tab, newline and carriage return) and DEL, shown as `\x1b`.
_CONTROL = {c: f"\\x{c:02x}" for c in (*range(32), 127, *range(0x80, 0xA0)) if c not in (9, 10, 13)}


class _Printable:
    """A stream that shows control characters instead of passing them to the terminal.

    Why: app names, env folders and messages can come from repo content, and an ESC sequence in a
    Deployment's name must not recolour, clear or retitle the operator's terminal."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        return int(self._stream.write(text.translate(_CONTROL)))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def main(argv: list[str] | None = None) -> int:
    out, err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _Printable(out), _Printable(err)
    try:
        return _main(argv)
    finally:
        sys.stdout, sys.stderr = out, err


def _main(argv: list[str] | None = None) -> int:
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
    p = sub.add_parser("audit", help="export the append-only audit log (JSON or CSV)")
    repo_arg(p)
    p.add_argument("--app", help="only rows about this app")
    p.add_argument("--env", help="only rows about this environment")
    p.add_argument("--since", help="only rows from this date on (YYYY-MM-DD[THH:MM], UTC)")
    p.add_argument("--limit", type=int, default=1_000_000, help="at most this many of the newest rows")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true")
    fmt.add_argument("--csv", action="store_true")
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
    as_json = bool(getattr(args, "json", False))
    try:
        if args.cmd in ("init", "check"):
            _need_repo(args.repo)
        if args.cmd == "plan":
            return cmd_plan(args, apply=False)
        if args.cmd == "run":
            return cmd_plan(args, apply=True)
        handlers = {
            "prs": cmd_prs,
            "audit": cmd_audit,
            "merge": cmd_merge,
            "init": cmd_init,
            "check": cmd_check,
            "testdrive": cmd_testdrive,
            "serve": cmd_serve,
        }
        return handlers[args.cmd](args)
    except (CommandError, ConfigError) as exc:
        return _fail(str(exc), "refused", as_json)
    except OpsbotError as exc:  # a peer (GitHub, git) failed: not the person's input
        return _fail(str(exc), "internal", as_json)
    except Exception:
        reference = uuid.uuid4().hex[:8]
        logging.getLogger("opsbot.cli").exception("opsbot %s failed (reference %s)", args.cmd, reference)
        return _fail(f"Something went wrong on opsbot's side (reference {reference}). Nothing was changed.",
                     "internal", as_json, reference=reference)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


__all__ = ["Info", "NoChange", "main"]
