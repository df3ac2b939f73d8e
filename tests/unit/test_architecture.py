"""The layer rule of DESIGN §6, checked on the source: core, manifests and commands import no Slack,
GitHub, aiohttp or Kubernetes client module, and only their adapters import those libraries."""

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
    # the live side of `status` comes through the LiveReader port (opsbot.intake.live)
    "kubernetes",
)
ADAPTERS = {
    "slack_bolt": {"opsbot/chat/slack.py"},
    "slack_sdk": {"opsbot/chat/slack.py"},
    "github": {"opsbot/forge/github.py"},
    # Helm's engine runs only in its worker process, behind opsbot.manifests.helm (one door to replace)
    "helm_python": {"opsbot/manifests/helm_worker.py"},
}


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


def test_slack_github_and_helm_libraries_are_imported_only_in_their_adapter() -> None:
    offenders = []
    for py in sorted((ROOT / "opsbot").rglob("*.py")) + sorted((ROOT / "commands").rglob("*.py")):
        rel = str(py.relative_to(ROOT))
        for mod in imports(py):
            for lib, allowed in ADAPTERS.items():
                if _matches(mod, lib) and rel not in allowed:
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
