"""The layer rule of DESIGN §6, checked on the source: core, manifests and commands import no Slack,
GitHub, aiohttp or Kubernetes client module, and only their adapters import those libraries
(the finer rules between adapters are import-linter contracts in pyproject.toml, run by .ci/run)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN_IN_CORE = (
    "slack_bolt",
    "slack_sdk",
    "github",
    "aiohttp",
    "opsbot.chat",
    "opsbot.intake",
    "opsbot.forge.github",
    "opsbot.server",
    # the live side of `status` comes through the LiveReader port (implemented in opsbot.kube.live)
    "opsbot.kube",
    "kubernetes",
)
ADAPTERS = {
    # the Bolt app in the transport; the Web API client in the poster (the transport holds one too)
    "slack_bolt": {"opsbot/chat/slack/transport.py"},
    "slack_sdk": {"opsbot/chat/slack/poster.py", "opsbot/chat/slack/transport.py"},
    "github": {"opsbot/forge/github.py"},
    # Helm's engine runs only in its worker process, behind opsbot.manifests.helm (one door to replace)
    "helm_python": {"opsbot/manifests/helm_worker.py"},
    # the Kubernetes client: watches, Lease election and live reads all live in one package
    "kubernetes": {"opsbot/kube/"},
}


def _allowed(rel: str, allowed: set[str]) -> bool:
    """A file is allowed by its path, or by a package directory (an entry ending in `/`)."""
    return any(rel == a or (a.endswith("/") and rel.startswith(a)) for a in allowed)


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


def _matches(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def test_core_manifests_and_commands_stay_free_of_adapters() -> None:
    offenders = []
    for layer in ("opsbot/core", "opsbot/manifests", "opsbot/policy", "commands"):
        for py in sorted((ROOT / layer).rglob("*.py")):
            for mod in imports(py):
                if any(_matches(mod, f) for f in FORBIDDEN_IN_CORE):
                    offenders.append(f"{py.relative_to(ROOT)} imports {mod}")
    assert offenders == []


def test_slack_github_helm_and_kubernetes_libraries_are_imported_only_in_their_adapter() -> None:
    offenders = []
    for py in sorted((ROOT / "opsbot").rglob("*.py")) + sorted((ROOT / "commands").rglob("*.py")):
        rel = str(py.relative_to(ROOT))
        for mod in imports(py):
            for lib, allowed in ADAPTERS.items():
                if _matches(mod, lib) and not _allowed(rel, allowed):
                    offenders.append(f"{rel} imports {mod}")
    assert offenders == []


def test_kubernetes_validate_is_not_taken_for_the_kubernetes_client() -> None:
    """The schema validator the gate uses stays allowed; only the cluster client is kept out."""
    assert not any(_matches("kubernetes_validate", f) for f in FORBIDDEN_IN_CORE)
    assert any(_matches("kubernetes.client", f) for f in FORBIDDEN_IN_CORE)


def test_the_checker_sees_a_violation() -> None:
    """The scan itself can fail: a file importing aiohttp is reported."""
    bad = ROOT / "opsbot" / "core" / "__init__.py"
    assert "aiohttp" not in imports(bad)
    tree_mods = {m for m in imports(ROOT / "opsbot" / "forge" / "github.py")}
    assert any(_matches(m, "github") for m in tree_mods)


def test_the_kubernetes_rule_is_not_fooled_by_kubernetes_validate() -> None:
    """`kubernetes_validate` (the offline schemas of the gate) is not the cluster client."""
    assert not _matches("kubernetes_validate", "kubernetes")
    assert _allowed("opsbot/kube/watcher.py", ADAPTERS["kubernetes"])
    assert not _allowed("opsbot/intake/watching.py", ADAPTERS["kubernetes"])


#: Store methods that change request state (the request row, its approvals, its thread claim).
REQUEST_STATE_WRITES = frozenset({
    "create_request", "update_request", "transition", "add_approval", "clear_approvals", "rebind_approvals",
    "claim_thread", "release_thread",
})
#: Store methods that write the outbox.
OUTBOX_WRITES = frozenset({"outbox_add"})
LIFECYCLE = "opsbot/core/requests.py"
STORES = "opsbot/store/"


def _calls(path: Path, names: frozenset[str]) -> list[str]:
    """`x.name(...)` calls of the given method names in one file (any receiver: store, self.store...)."""
    tree = ast.parse(path.read_text(), str(path))
    return [
        f"{path.relative_to(ROOT)}:{node.lineno} calls .{node.func.attr}()"
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in names
    ]


def _sources() -> list[Path]:
    return sorted((ROOT / "opsbot").rglob("*.py")) + sorted((ROOT / "commands").rglob("*.py"))


def test_only_the_request_lifecycle_writes_request_state() -> None:
    """One writer (DESIGN §2): every transition, approval and thread goes through core/requests.py,
    so every one is audited and published as an event (metrics and the console see them all)."""
    offenders = []
    for py in _sources():
        rel = py.relative_to(ROOT).as_posix()
        if rel == LIFECYCLE or rel.startswith(STORES):
            continue
        offenders += _calls(py, REQUEST_STATE_WRITES)
    assert offenders == []


def test_only_the_notify_package_writes_the_outbox() -> None:
    offenders = []
    for py in _sources():
        rel = py.relative_to(ROOT).as_posix()
        if rel.startswith(("opsbot/notify/", STORES)):
            continue
        offenders += _calls(py, OUTBOX_WRITES)
    assert offenders == []


def test_the_scans_see_a_writer_where_there_is_one() -> None:
    """The scan itself is checked: a module that writes gets named (no vacuous pass)."""
    bad = ROOT / "opsbot" / "core" / "requests.py"
    assert _calls(bad, REQUEST_STATE_WRITES), "the lifecycle must show up as a writer"
    assert _calls(ROOT / "opsbot" / "notify" / "outbox.py", OUTBOX_WRITES)
