"""Each repo-side defence of issue 9 (items 1, 3, 4, 6, 7) and issue 11 item 2, in process.

Every test here failed on the code before the fix (checked by running it there); the hostile-repo
corpus in test_hostile_cli.py runs the same kinds of input through the real CLI as a child process.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from commands import REGISTRY
from opsbot import cli
from opsbot.core.model import CreateCluster, Scale
from opsbot.errors import CommandError, ConfigError
from opsbot.manifests.config import discover, parse_config
from opsbot.manifests.gitrepo import GitRepo
from opsbot.manifests.planner import Planner
from tests.security.hostile import BOMB, CONFIG_BOMB, hostile_repo

KUSTOMIZATION = "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"


def planner(repo: Path) -> Planner:
    return Planner(GitRepo(str(repo)), "main")


@pytest.fixture(scope="module")
def templates(tmp_path_factory: pytest.TempPathFactory) -> Planner:
    """One planner on the cluster-templates fixture: planning a cluster changes nothing, so cases share it."""
    return planner(hostile_repo(tmp_path_factory.mktemp("templates") / "r", base="cluster-templates"))


def refused(fn: Any, *args: Any) -> str:
    """Run fn; it must refuse (CommandError or ConfigError); returns the message."""
    with pytest.raises((CommandError, ConfigError)) as info:
        fn(*args)
    return str(info.value)


# ------------------------------------------------------------------------------- 1. path confinement


@pytest.mark.parametrize(
    "config, key",
    [
        ("environments:\n  staging:\n    path: ../../etc\n", "environments.staging.path"),
        ("environments:\n  staging:\n    paths: [overlays/staging, /etc]\n", "environments.staging.path"),
        ("clusters:\n  path: ../../../../tmp/x/{name}/..\n", "clusters.path"),
        ("clusters:\n  path: clusters/{name}/../../..\n", "clusters.path"),
        ("clusters:\n  templates: ../..\n", "clusters.templates"),
        ("clusters:\n  templates: \"..\\\\..\\\\x\"\n", "clusters.templates"),
    ],
)
def test_config_paths_that_leave_the_repo_are_refused_naming_the_key(config: str, key: str) -> None:
    message = refused(parse_config, config)
    assert key in message and ("leaves the repository" in message or "absolute" in message)


def test_env_names_with_control_characters_are_refused_in_config() -> None:
    message = refused(parse_config, 'environments:\n  "st\\x1bging": {path: overlays/staging}\n')
    assert "is not an environment name" in message


def test_template_names_dot_and_dotdot_are_refused(tmp_path: Path) -> None:
    repo = hostile_repo(tmp_path / "r", base="cluster-templates")
    for name in ("..", ".", "../aws-small"):
        message = refused(planner(repo).plan, CreateCluster("c1", name, ()))
        assert "is not a template name" in message


def test_kustomize_reference_to_an_absolute_path_outside_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "kustomization.yaml").write_text(KUSTOMIZATION + "resources: [cm.yaml]\n")
    (outside / "cm.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: stolen}\ndata: {k: v}\n")
    staging = (Path(__file__).parents[2] / "opsbot/samples/fleet/overlays/staging/kustomization.yaml").read_text()
    evil = staging.replace("resources:\n", f"resources:\n- {outside}\n")
    repo = hostile_repo(tmp_path / "r", {"overlays/staging/kustomization.yaml": evil})
    message = refused(planner(repo).plan, Scale("frontend", "staging", 3))
    assert "overlays/staging/kustomization.yaml" in message and str(outside) in message


def test_kustomize_reference_climbing_out_of_the_repo_is_refused(tmp_path: Path) -> None:
    staging = (Path(__file__).parents[2] / "opsbot/samples/fleet/overlays/staging/kustomization.yaml").read_text()
    evil = staging.replace("resources:\n", "resources:\n- ../../../../../../../../etc/opsbot-x\n")
    repo = hostile_repo(tmp_path / "r", {"overlays/staging/kustomization.yaml": evil})
    message = refused(planner(repo).plan, Scale("frontend", "staging", 3))
    assert "points outside the repository" in message and "overlays/staging/kustomization.yaml" in message


@pytest.mark.parametrize("where", ["outside the repository", "remote"])
def test_a_repo_templates_kustomization_cannot_reach_outside(tmp_path: Path, where: str) -> None:
    """The rendered template is built in a temp dir: `../../../<path from the temp root>` climbs out."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "kustomization.yaml").write_text(KUSTOMIZATION + "resources: [cm.yaml]\n")
    (outside / "cm.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: stolen}\ndata: {k: v}\n")
    climb = "../../../" + os.path.relpath(outside, tempfile.gettempdir())
    ref = climb if where != "remote" else "https://example.com/acme/x.yaml"
    repo = hostile_repo(
        tmp_path / "r",
        {
            "templates/clusters/evil/kustomization.yaml": KUSTOMIZATION + f"resources:\n- {ref}\n- ns.yaml\n",
            "templates/clusters/evil/ns.yaml": "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ${CLUSTER_NAME}\n",
        },
        base="cluster-templates",
    )
    message = refused(planner(repo).plan, CreateCluster("c1", "evil", ()))
    assert ref in message and where in message


def test_create_cluster_does_not_write_through_a_symlinked_dir(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    repo = hostile_repo(tmp_path / "r", links={"clusters": str(outside)}, base="cluster-templates", remove=("clusters",))
    message = refused(planner(repo).plan, CreateCluster("c1", None, ()))
    assert "clusters is a symbolic link" in message


def test_write_inside_never_follows_a_symlink(tmp_path: Path) -> None:
    from opsbot.manifests.paths import PathRefused, write_inside

    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "d").symlink_to(outside)
    (root / "f.yaml").symlink_to(outside / "f.yaml")
    for rel in ("d/x.yaml", "f.yaml", "../x.yaml"):
        with pytest.raises(PathRefused):
            write_inside(root, rel, "x: 1\n")
    assert list(outside.iterdir()) == []


# ------------------------------------------------------------------------- 3. alias bombs and sizes


@pytest.mark.parametrize(
    "spec, key",
    [("protected: 'no'", "protected"), ("approvals: true", "approvals"), ("max_replicas: true", "max_replicas")],
)
def test_config_flags_and_numbers_are_type_checked(spec: str, key: str) -> None:
    message = refused(parse_config, f"environments:\n  prod:\n    path: overlays/production\n    {spec}\n")
    assert f"environments.prod.{key}" in message


def test_aliases_in_opsbot_yaml_are_refused() -> None:
    message = refused(parse_config, "environments:\n  staging:\n    path: &p overlays/staging\n  prod:\n    path: *p\n")
    assert ".opsbot.yaml" in message and "alias" in message


def test_alias_bomb_in_opsbot_yaml_is_refused_before_it_is_walked() -> None:
    message = refused(parse_config, CONFIG_BOMB)
    assert ".opsbot.yaml" in message and "alias" in message


def test_config_values_are_type_checked_before_str() -> None:
    message = refused(parse_config, "environments:\n  staging:\n    path: overlays/staging\n    branch: [a, b]\n")
    assert "environments.staging.branch" in message and "expected text" in message


def test_alias_bomb_in_a_flux_clusters_file_is_refused_during_discovery(tmp_path: Path) -> None:
    repo = hostile_repo(tmp_path / "r", {"clusters/staging/bomb.yaml": BOMB + "\n"})
    message = refused(discover, GitRepo(str(repo)).snapshot("main"))
    assert "clusters/staging/bomb.yaml" in message and "alias" in message


def test_alias_bomb_in_a_manifest_is_refused_naming_the_file(tmp_path: Path) -> None:
    repo = hostile_repo(tmp_path / "r", {"apps/frontend/bomb.yaml": BOMB + "\n"})
    snap = GitRepo(str(repo)).snapshot("main")
    message = refused(snap.docs, "apps/frontend/bomb.yaml")
    assert "apps/frontend/bomb.yaml" in message and "alias" in message


def test_a_few_ordinary_anchors_still_load(tmp_path: Path) -> None:
    text = "base: &b {cpu: 1, mem: 2}\nitems:\n- <<: *b\n  name: a\n- <<: *b\n  name: b\n"
    repo = hostile_repo(tmp_path / "r", {"apps/frontend/anchors.yaml": text})
    docs = GitRepo(str(repo)).snapshot("main").docs("apps/frontend/anchors.yaml")
    assert docs[0]["items"][1] == {"cpu": 1, "mem": 2, "name": "b"}


def test_oversize_file_is_refused_naming_it(tmp_path: Path) -> None:
    big = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: big}\ndata:\n" + "  k: " + "x" * (9 * 1024 * 1024) + "\n"
    repo = hostile_repo(tmp_path / "r", {"apps/frontend/big.yaml": big})
    snap = GitRepo(str(repo)).snapshot("main")
    for read in (snap.docs, snap.read):  # the text is never held either: the blob is drained unread
        message = refused(read, "apps/frontend/big.yaml")
        assert "apps/frontend/big.yaml" in message and "at most" in message


# ------------------------------------------------------------------------------ 4. remote references


@pytest.mark.parametrize(
    "ref",
    [
        "https://raw.githubusercontent.com/acme/x/main/deploy.yaml",
        "github.com/acme/infra//base?ref=v1.2.0",
        "git::https://example.com/acme/infra.git//base",
        "git@github.com:acme/infra.git/base",
        "example.com/acme/infra/base",
    ],
)
def test_remote_kustomize_reference_is_refused_by_default(tmp_path: Path, ref: str) -> None:
    staging = (Path(__file__).parents[2] / "opsbot/samples/fleet/overlays/staging/kustomization.yaml").read_text()
    repo = hostile_repo(tmp_path / "r", {"overlays/staging/kustomization.yaml": staging.replace("resources:\n", f"resources:\n- {ref}\n")})
    message = refused(planner(repo).plan, Scale("frontend", "staging", 3))
    assert "overlays/staging/kustomization.yaml" in message and ref in message and "allow_remote" in message


def test_remote_component_in_a_base_is_refused_too(tmp_path: Path) -> None:
    base = (Path(__file__).parents[2] / "opsbot/samples/fleet/apps/frontend/kustomization.yaml").read_text()
    evil = base + "components:\n- https://example.com/acme/c.git//comp\n"
    repo = hostile_repo(tmp_path / "r", {"apps/frontend/kustomization.yaml": evil})
    message = refused(planner(repo).plan, Scale("frontend", "staging", 3))
    assert "apps/frontend/kustomization.yaml" in message and "https://example.com/acme/c.git//comp" in message


@pytest.mark.parametrize(
    "ref, remote",
    [("example.com/acme/infra/base", True), ("ssh://git@host/x", True), ("v1.2/base", False), ("../base", False)],
)
def test_what_counts_as_remote(ref: str, remote: bool) -> None:
    from opsbot.manifests.kustomize import is_remote

    assert is_remote(ref) is remote


def test_allow_remote_is_an_explicit_boolean_setting() -> None:
    assert parse_config("kustomize: {allow_remote: true}\n").kustomize_allow_remote is True
    assert parse_config("clusters: {path: 'c/{name}'}\n").kustomize_allow_remote is False
    assert "allow_remote" in refused(parse_config, "kustomize: {allow_remote: 'yes please'}\n")


def test_build_environment_holds_no_inherited_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from opsbot.manifests.kustomize import build_env

    monkeypatch.setenv("GITHUB_TOKEN", "ghp_secret")
    env = build_env(tmp_path, allow_remote=False)
    assert "GITHUB_TOKEN" not in env and env["HOME"] == str(tmp_path) and env["PATH"] == ""
    assert env["HTTPS_PROXY"].startswith("http://127.0.0.1:")


# -------------------------------------------------------------------- 6. create cluster template values


@pytest.mark.parametrize(
    "value",
    ['{"evil":true}', "[1,2]", "|", ">", "!!binary aGVsbG8=", "&a", "*x", "!foo", "{}"],
)
def test_template_values_must_be_plain_scalars(templates: Planner, value: str) -> None:
    message = refused(templates.plan, CreateCluster("c1", None, (("kubernetes_version", value),)))
    assert "kubernetes_version=" in message


def _values(change: Any, key: str) -> list[Any]:
    out: list[Any] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k == key:
                    out.append(v)
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    for e in change.edits:
        for doc in yaml.safe_load_all(e.after):
            walk(doc)
    return out


@pytest.mark.parametrize("template", [None, "aws-small"])  # quoted placeholders, plain placeholders
@pytest.mark.parametrize("value", ["a\\b", 'a"b', "a'b", "a\\u0041", "x: y", "a #b", "1.5", "yes"])
def test_template_values_read_back_exactly_or_are_refused(templates: Planner, value: str, template: str | None) -> None:
    extra = (("aws_region", "eu-west-1"), ("ssh_key_name", "k")) if template else ()
    try:
        change = templates.plan(CreateCluster("c1", template, (("kubernetes_version", value), *extra)))
    except CommandError as exc:
        assert "kubernetes_version=" in str(exc)  # a clear refusal about the value; a wrong file or a crash is not
        return
    versions = _values(change, "version")
    assert versions and all(v == value for v in versions)


@pytest.mark.parametrize("value", ['a"b', "a\\b", "A", "a_b"])
def test_template_namespace_must_be_one_the_api_server_accepts(templates: Planner, value: str) -> None:
    message = refused(templates.plan, CreateCluster("c1", None, (("namespace", value),)))
    assert "namespace" in message and "is not a DNS-1123 label" in message


# --------------------------------------------------------------------- 7. bad input is a one-line refusal


@pytest.mark.parametrize(
    "text",
    [
        "scale frontend ² in staging",
        "scale frontend ³-5 in staging",
        "scale frontend ① in staging",
        "scale frontend ３ in staging",
        "scale frontend 2-³ in staging",
        "scale frontеnd 3 in staging",  # Cyrillic е
    ],
)
def test_odd_unicode_digits_and_confusables_are_refused(text: str) -> None:
    with pytest.raises(CommandError):
        REGISTRY.parse(text)


def test_unknown_key_in_opsbot_yaml_reaches_the_cli_user_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = hostile_repo(tmp_path / "r", {".opsbot.yaml": "aprovals: 1\nenvironments:\n  staging: {path: overlays/staging}\n"})
    code = cli.main(["plan", "scale frontend 3 in staging", "--repo", str(repo)])
    err = capsys.readouterr().err
    assert code != 0 and "aprovals" in err and "Something went wrong" not in err


@pytest.mark.parametrize("text", ["status", "scale frontend 3 in staging"])
def test_config_error_is_a_refusal_in_chat_too(tmp_path: Path, text: str) -> None:
    from opsbot.app import Opsbot
    from opsbot.core.model import Actor
    from opsbot.core.results import Failure
    from opsbot.settings import load_settings

    repo = hostile_repo(tmp_path / "r", {".opsbot.yaml": "aprovals: 1\nenvironments:\n  staging: {path: overlays/staging}\n"})
    bot = Opsbot(load_settings(environ={}, repo=str(repo)))
    try:
        result = bot.handle(text, Actor("U1", "alice", "chat"))
    finally:
        bot.close()
    assert isinstance(result, Failure) and not result.reference
    assert "aprovals" in result.text()


# ------------------------------------------------------------------ issue 11 item 2: nothing to work on


def test_plan_with_nothing_discovered_points_to_init_and_the_reference(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = hostile_repo(tmp_path / "r", {"README.md": "nothing here\n"}, base=None)
    code = cli.main(["plan", "scale frontend 3 in staging", "--repo", str(repo)])
    err = capsys.readouterr().err
    assert code != 0 and "opsbot init" in err and "docs/configuration.md" in err
    assert "Something went wrong" not in err


# ----------------------------------------------------------- 6. any template value: read back or refused

TEMPLATE = "a: \"${V}\"\nb: '${V}'\nc: ${V}\nd: x-${V}-y\ne:\n- ${V}\nf: {k: \"${V}\"}\n"


@settings(max_examples=400, deadline=None)
@given(st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12))
def test_any_template_value_reads_back_exactly_or_is_refused(value: str) -> None:
    from opsbot.manifests.templating import check_value, prove, substitute

    try:
        check_value("v", value)
        out, _, _ = substitute(TEMPLATE, {"V": value})
        prove("t.yaml", TEMPLATE, out, {"V": value})
    except CommandError:
        return
    doc = yaml.safe_load(out)
    assert doc == {"a": value, "b": value, "c": value, "d": f"x-{value}-y", "e": [value], "f": {"k": value}}
