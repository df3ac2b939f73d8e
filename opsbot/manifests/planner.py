"""Intent in, Change out: the pure heart of opsbot (no forge, no chat, no store).

Like Flux's image-automation, a plan is a function from repo text to repo text plus a list of what
changed; it refuses (CommandError) rather than produce a change it cannot prove minimal and valid.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from opsbot.core import wording
from opsbot.core.model import (
    Change,
    CreateCluster,
    Deploy,
    FieldChange,
    FileEdit,
    Intent,
    Promote,
    Rollback,
    Scale,
    ScaleBounds,
)
from opsbot.errors import CommandError, OpsbotError, ValidationFailed
from opsbot.manifests import edits as E
from opsbot.manifests import paths
from opsbot.manifests.crds import Catalog
from opsbot.manifests.gitrepo import GitRepo, Snapshot
from opsbot.manifests.helmplan import ChartPlanner
from opsbot.manifests.images import is_version_range, parse_image, valid_chart_version, valid_tag
from opsbot.manifests.index import (
    Index,
    Target,
    Version,
    chart_source,
    current_replicas,
    current_version,
    primary_container,
)
from opsbot.manifests.kustomize import build_files
from opsbot.manifests.templating import check_object_names, check_value, prove, substitute
from opsbot.manifests.validate import check_objects, check_schema, check_yaml
from opsbot.manifests.yamledit import load_all

BUNDLED_TEMPLATES = Path(__file__).resolve().parent.parent / "templates" / "clusters"
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


class NothingToDo(CommandError):
    """The repo already says what was asked: an answer, not an empty PR."""


@dataclass(frozen=True)
class PlanOptions:
    kubernetes_version: str = "1.37"
    max_replicas: int = 50
    #: pull charts that are not in the repo (HelmRepository / OCI) into the chart cache; off, the
    #: Helm render proof of such releases is reported as skipped (never a silent pass)
    fetch_charts: bool = False
    #: where pulled charts are kept (default: beside the repo's git dir)
    chart_cache: Path | None = None


def unified_diff(edits: list[FileEdit]) -> str:
    out: list[str] = []
    for e in edits:
        a = (e.before or "").splitlines(keepends=True)
        b = e.after.splitlines(keepends=True)
        frm = "/dev/null" if e.before is None else f"a/{e.path}"
        lines = list(difflib.unified_diff(a, b, frm, f"b/{e.path}", n=3))
        for ln in lines:
            out.append(ln if ln.endswith("\n") else ln + "\n\\ No newline at end of file\n")
    return "".join(out)


class Planner:
    """Plans intents against one base commit of a manifest repo."""

    def __init__(self, repo: GitRepo, base_ref: str, options: PlanOptions | None = None) -> None:
        self.repo = repo
        self.index = Index(repo, base_ref)
        self.options = options or PlanOptions()
        self._catalogs: dict[str, Catalog] = {}
        cache = self.options.chart_cache
        if cache is None and repo.cache.path:
            cache = repo.cache.path.parent / "charts"
        self._charts = ChartPlanner(self.index, cache, fetch=self.options.fetch_charts)

    def crds(self, snap: Snapshot) -> Catalog:
        """The CRDs of one commit, read only when a custom kind needs one."""
        if snap.sha not in self._catalogs:
            self._catalogs[snap.sha] = Catalog(snap)
        return self._catalogs[snap.sha]

    @property
    def config(self) -> Any:
        return self.index.config

    def plan(self, intent: Intent) -> Change:
        if isinstance(intent, ScaleBounds):
            return self.scale_bounds(intent)
        if isinstance(intent, Scale):
            return self.scale(intent)
        if isinstance(intent, Deploy):
            return self.deploy(intent)
        if isinstance(intent, Promote):
            return self.promote(intent)
        if isinstance(intent, Rollback):
            return self.rollback(intent)
        if isinstance(intent, CreateCluster):
            return self.create_cluster(intent)
        raise CommandError(f"{intent.verb} does not change the repo")

    # ------------------------------------------------------------------------------ scale
    def _max_replicas(self, t: Target) -> int:
        return t.env.max_replicas or self.options.max_replicas

    def scale(self, intent: Scale) -> Change:
        t = self.index.find(intent.app, intent.env)
        limit = self._max_replicas(t)
        if intent.replicas > limit:
            raise CommandError(
                # always plural: above a maximum of at least 1 (docs/troubleshooting.md quotes it)
                f"{intent.replicas} replicas is above the maximum of {limit} for {t.env.name}. "
                "Ask an admin to raise max_replicas in .opsbot.yaml if you really need more."
            )
        if t.kind == "DaemonSet":
            raise CommandError(
                f"{intent.app} is a DaemonSet: it runs one pod per node and has no replica count."
            )
        hpa = t.hpa()
        if hpa is not None:
            spec = hpa.get("spec") or {}
            raise CommandError(
                f"{intent.app} in {t.env.name} is scaled by HorizontalPodAutoscaler {hpa['metadata']['name']} "
                f"(min {spec.get('minReplicas', 1)}, max {spec.get('maxReplicas')}), which would undo a fixed "
                f"count. Change its bounds instead: `scale {intent.app} <min>-<max> in {t.env.name}`."
            )
        keys = self.config.helm_keys(intent.app)
        replicas_key = keys.replicas
        if t.layout == "helm" or t.is_helmrelease:
            replicas_key = self._charts.replicas_key(t, keys.replicas if keys.replicas_pinned else None)
        self._not_generated(t, replicas_key)
        old = current_replicas(t, replicas_key)
        if old == intent.replicas:
            raise NothingToDo(f"{intent.app} already runs {_replicas(old)} in {t.env.name}. Nothing to change.")
        es = E.EditSet(t.snap)
        es.render_field = ("replicas", intent.replicas)
        E.set_replicas(self.index, es, t, intent.replicas, replicas_key)
        fields = [FieldChange(intent.app, t.env.name, "replicas", _s(old), str(intent.replicas), t.root)]
        title = f"Scale {intent.app} to {wording.replicas(intent.replicas)} in {t.env.name}"
        return self._finish(intent, t, es, fields, title)

    def scale_bounds(self, intent: ScaleBounds) -> Change:
        t = self.index.find(intent.app, intent.env)
        limit = self._max_replicas(t)
        if intent.max_replicas > limit:
            raise CommandError(
                f"max {intent.max_replicas} is above the maximum of {wording.replicas(limit)} for {t.env.name}."
            )
        hpa = t.hpa()
        if hpa is None:
            raise CommandError(
                f"{intent.app} in {t.env.name} has no HorizontalPodAutoscaler, so it has no bounds to set. "
                f"Use `scale {intent.app} <replicas> in {t.env.name}` for a fixed count."
            )
        spec = hpa.get("spec") or {}
        old_lo, old_hi = spec.get("minReplicas", 1), spec.get("maxReplicas")
        if (old_lo, old_hi) == (intent.min_replicas, intent.max_replicas):
            raise NothingToDo(
                f"{intent.app} in {t.env.name} already scales between {old_lo} and {old_hi}. Nothing to change."
            )
        es = E.EditSet(t.snap)
        E.set_hpa_bounds(self.index, es, t, intent.min_replicas, intent.max_replicas)
        fields = [
            FieldChange(
                intent.app,
                t.env.name,
                "autoscaling",
                f"{old_lo}-{old_hi}",
                f"{intent.min_replicas}-{intent.max_replicas}",
                t.root,
            )
        ]
        title = f"Scale {intent.app} between {intent.min_replicas} and {intent.max_replicas} replicas in {t.env.name}"
        return self._finish(intent, t, es, fields, title)

    # ------------------------------------------------------------------------------ versions
    def deploy(self, intent: Deploy) -> Change:
        t = self.index.find(intent.app, intent.env)
        keys = self.config.helm_keys(intent.app)
        cur = current_version(t, keys.tag)
        if t.is_helmrelease:
            if not valid_chart_version(intent.version):
                raise CommandError(f'"{intent.version}" is not a chart version (e.g. 6.5.1).')
            want = Version(chart=intent.version, tag=cur.tag)
        elif t.layout == "helm":
            _check_tag(intent.version)
            want = Version(tag=intent.version)
        else:
            _check_tag(intent.version)
            prim = primary_container(cur.images, intent.app)
            if prim is None:
                raise CommandError(f"{intent.app} in {t.env.name} has no containers to deploy to.")
            want = Version(
                images=tuple(
                    (c, parse_image(img).with_tag(intent.version) if c == prim[0] else img)
                    for c, img in cur.images
                )
            )
        title = f"Deploy {intent.app} {intent.version} to {t.env.name}"
        return self._set_version(intent, t, cur, want, title)

    def promote(self, intent: Promote) -> Change:
        dst = self.index.env(intent.target)
        src_name = intent.source or self.config.source_env(dst.name)
        if not src_name:
            raise CommandError(
                f"{dst.name} has no environment to promote from. Say `promote {intent.app} from <env> to {dst.name}` "
                f"or set promote_from in .opsbot.yaml."
            )
        src_env = self.index.env(src_name)
        if src_env.name == dst.name:
            raise CommandError("Promote needs two different environments.")
        keys = self.config.helm_keys(intent.app)
        s = self.index.find(intent.app, src_env.name)
        t = self.index.find(intent.app, dst.name)
        have, src = current_version(t, keys.tag), current_version(s, keys.tag)
        if t.layout != s.layout or t.is_helmrelease != s.is_helmrelease:
            raise CommandError(_cross_layout(intent.app, s, src, t))
        if t.is_helmrelease and src.chart and is_version_range(src.chart) and src.chart != have.chart:
            pinned = have.chart and not is_version_range(have.chart)
            raise CommandError(
                f'{intent.app} in {src_env.name} follows the chart version range "{src.chart}", not one version, '
                + (f"and {dst.name} pins {have.chart}; copying the range would let {dst.name} upgrade on its own. "
                   if pinned else f"so the repo does not say which version {src_env.name} runs. ")
                + f"Say `deploy {intent.app} <version> to {dst.name}` with the version {src_env.name} runs "
                f"(its HelmRelease status shows it)."
            )
        if t.is_helmrelease or t.layout == "helm":
            want = Version(chart=src.chart if t.is_helmrelease else None, tag=src.tag or have.tag)
        else:
            src_by_c = dict(src.images)
            missing = [c for c, _ in have.images if c not in src_by_c]
            if missing:
                raise CommandError(
                    f"{intent.app} in {src_env.name} has no container {missing[0]} to promote from."
                )
            want = Version(
                images=tuple(
                    (
                        c,
                        parse_image(img).with_tag(str(parse_image(src_by_c[c]).tag))
                        if parse_image(src_by_c[c]).tag
                        else img,
                    )
                    for c, img in have.images
                )
            )
        title = f"Promote {intent.app} from {src_env.name} to {dst.name}"
        return self._set_version(intent, t, have, want, title, source_env=src_env.name)

    def rollback(self, intent: Rollback) -> Change:
        t = self.index.find(intent.app, intent.env)
        keys = self.config.helm_keys(intent.app)
        cur = current_version(t, keys.tag)
        if intent.version:
            return self.deploy(Deploy(intent.app, intent.version, intent.env))
        prev = self._previous_version(t, cur, keys.tag)
        if prev is None:
            raise CommandError(
                f"No earlier version of {intent.app} in {t.env.name} in the last 30 commits. "
                f"Say `rollback {intent.app} in {t.env.name} to <version>`."
            )
        title = f"Roll back {intent.app} in {t.env.name} to {prev.primary_tag(intent.app) or prev.describe()}"
        return self._set_version(intent, t, cur, prev, title)

    def _previous_version(self, t: Target, cur: Version, tag_key: str) -> Version | None:
        """Walk the env's history (newest first) to the first commit where the app ran something else."""
        graph = self.index.graph(t.snap)
        files = [t.root] if t.layout == "helm" else graph.closure(t.root)[1]
        if t.layout == "helm":
            files += self.index.helm_layers(t.env, t.snap, t.root)
        commits = self.repo.log(t.snap.sha, files, limit=30)
        for sha in commits[1:] if commits and commits[0] == t.snap.sha else commits:
            # Today's config and layout, never the old commit's `.opsbot.yaml` or re-discovery: the
            # question is what today's env ran back then.
            if t.env.branch:
                idx = Index(
                    self.repo, self.index.base_ref, env_refs={t.env.name: sha}, config=self.config, index_fleet=False
                )
            else:
                idx = Index(self.repo, sha, config=self.config, index_fleet=False)
            try:
                old = idx.find(t.app, t.env.name)
            except OpsbotError:  # the app or its files were not there yet, or did not parse then
                continue
            v = current_version(old, tag_key)
            if v != cur and (v.images or v.chart or v.tag):
                return v
        return None

    def _not_generated(self, t: Target, key: str) -> None:
        """Refuse an edit that would not take effect, or would shadow the value's real home.

        An Argo CD Application's helm.parameters and inline values win over every values file, so
        a values-file edit of such a key changes nothing in the cluster. A HelmRelease that takes a
        value from a generated ConfigMap: writing `spec.values` would win over it (Flux merges
        `valuesFrom` first), leaving two different values in the repo; editing the values file
        renames the generated ConfigMap, which the render proof cannot yet tell from an unrelated
        change. Either way, say where the value lives."""
        vc = t.env.chart_of(t.root) if t.layout == "helm" else None
        hit = next(
            (k for k in (vc.overrides if vc else ()) if k == key or k.startswith(key + ".") or key.startswith(k + ".")),
            None,
        )
        if hit is not None:
            raise CommandError(
                f"The Argo CD Application of {t.app} in {t.env.name} sets {hit} itself (helm parameters or "
                f"inline values), which wins over {t.root}; an edit there would change nothing. Change it in "
                "the Application, or drop it there so the values file decides."
            )
        if not t.is_helmrelease:
            return
        home = t.value_home(key)
        if home is None:
            return
        if not home.startswith("ConfigMap "):
            # Flux rebuilds a chart from Git only when its version changes, unless
            # reconcileStrategy is Revision: an edit of this file may not reach the cluster.
            raise CommandError(
                f"{t.app} in {t.env.name} takes {key} from {home} (the chart's valuesFiles); writing spec.values "
                f"would shadow it. Change {key} in {home} (with reconcileStrategy: Revision so Flux picks it up), "
                "or move it into the HelmRelease's spec.values so opsbot can change it."
            )
        cm = home.removeprefix("ConfigMap ")
        files = self.index.generated_from(t, cm)
        where = f" from {', '.join(files)}" if files else ""
        raise CommandError(
            f"{t.app} in {t.env.name} takes {key} from ConfigMap {cm} (valuesFrom), generated{where}; "
            f"opsbot does not edit generated values files yet. Change {key} there, or move it into the "
            "HelmRelease's spec.values so opsbot can change it."
        )

    def _set_version(
        self,
        intent: Intent,
        t: Target,
        have: Version,
        want: Version,
        title: str,
        source_env: str | None = None,
    ) -> Change:
        env = t.env.name
        es = E.EditSet(t.snap)
        fields: list[FieldChange] = []
        keys = self.config.helm_keys(t.app)
        if t.layout == "helm":
            if want.tag and want.tag != have.tag:
                self._not_generated(t, keys.tag)
                es.render_field = ("image tag", want.tag)
                E.set_helm_value(es, t, keys.tag, want.tag)
                fields.append(FieldChange(t.app, env, "image tag", have.tag, want.tag, t.root))
        elif t.is_helmrelease:
            if want.chart and want.chart != have.chart:
                es.render_field = ("chart version", want.chart)
                source = chart_source(t)
                if source is not None:
                    self._charts.set_source_version(es, t, source[0], source[1], want.chart)
                else:
                    E.set_helmrelease(
                        self.index, es, t, ["spec", "chart", "spec", "version"], want.chart, "chart version"
                    )
                fields.append(FieldChange(t.app, env, "chart version", have.chart, want.chart, t.root))
            if want.tag and want.tag != have.tag:
                self._not_generated(t, keys.tag)
                es.render_field = es.render_field or ("image tag", want.tag)
                E.set_helmrelease(
                    self.index, es, t, ["spec", "values", *keys.tag.split(".")], want.tag, "image tag"
                )
                fields.append(FieldChange(t.app, env, "image tag", have.tag, want.tag, t.root))
        else:
            have_by_c = dict(have.images)
            for c, img in want.images:
                if c in have_by_c and have_by_c[c] != img:
                    E.set_image(self.index, es, t, c, img)
                    fields.append(FieldChange(t.app, env, f"image {c}", have_by_c[c], img, t.root))
        if not fields:
            same = have.primary_tag(t.app) or have.describe()
            where = f" (same as {source_env})" if source_env else ""
            raise NothingToDo(f"{t.app} is already at {same} in {env}{where}. Nothing to change.")
        return self._finish(intent, t, es, fields, title)

    # ------------------------------------------------------------------------------ the gate
    def _finish(
        self, intent: Intent, t: Target, es: E.EditSet, fields: list[FieldChange], title: str
    ) -> Change:
        edits = es.file_edits()
        for e in edits:
            paths.check_no_links(e.path, t.snap.links)
            others = self.index.other_envs_reading(t.env, e.path) if e.before is not None else []
            if others:
                raise CommandError(
                    f"{e.path} is also read by {', '.join(others)}; opsbot will not change it for {t.env.name}."
                )
        checks = [check_yaml(edits)]
        rendered: list[dict[str, Any]] | None = None
        if t.layout == "kustomize":
            built, objects = E.verify_kustomize(self.index, es, t)
            if built.ok:
                rendered = objects
            checks.append(built)
        objs = E.changed_objects(es, t, (lambda: rendered or []) if rendered is not None else None)
        if t.layout != "helm":
            checks.extend(check_objects(objs, self.options.kubernetes_version, self.crds(t.snap)))
        proof = self._charts.proof(es, t, rendered) if all(c.ok for c in checks) else None
        if proof is not None:
            checks.append(proof[0])
            if proof[1]:
                checks.append(check_schema(proof[1], self.options.kubernetes_version, label="rendered by Helm"))
        fixed_fields = [
            FieldChange(f.app, f.env, f.field, f.old, f.new, ", ".join(e.path for e in edits)) for f in fields
        ]
        change = Change(
            intent=intent,
            base_branch=t.env.branch or self.index.base_ref,
            base_sha=t.snap.sha,
            edits=tuple(edits),
            fields=tuple(fixed_fields),
            title=title,
            checks=tuple(checks),
            notes=tuple(es.notes),
        )
        failed = [c for c in checks if not c.ok]
        if failed:
            raise ValidationFailed(
                "The change failed validation, so no PR was opened: "
                + "; ".join(f"{c.name}: {c.detail}" for c in failed)
            )
        return change

    # ------------------------------------------------------------------------------ clusters
    def create_cluster(self, intent: CreateCluster) -> Change:
        name = intent.name
        if not DNS1123_LABEL.fullmatch(name):
            raise CommandError(
                f'"{name}" is not a valid cluster name: use lowercase letters, digits and "-", start and end '
                "with a letter or digit, at most 63 characters (DNS-1123 label)."
            )
        snap = self.index.snap
        cfg = self.config.clusters
        dest = paths.fill_name(cfg.path, name, ".opsbot.yaml: clusters.path")
        if snap.is_dir(dest) or snap.exists(dest) or dest in snap.links:
            raise CommandError(f"Cluster {name} already exists at {dest}/. Pick another name.")
        paths.check_no_links(dest, snap.links)
        files = self._template_files(snap, intent.template or "default", cfg.templates)
        variables = {"CLUSTER_NAME": name}
        for k, v in intent.variables:
            check_value(k, v)
            variables[k.upper().replace("-", "_")] = v
        rendered: list[FileEdit] = []
        missing: set[str] = set()
        used: set[str] = set()
        for rel, text in files:
            out, miss, seen = substitute(text, variables)
            missing |= miss
            used |= seen
            path = paths.repo_path(f"{dest}/{rel}", f"template file {rel}")
            paths.check_no_links(path, snap.links)
            if not miss:
                prove(path, text, out, {k: v for k, v in variables.items() if k in seen})
            rendered.append(FileEdit(path, None, out))
        if missing:
            raise CommandError(
                f"Template {intent.template or 'default'} needs {', '.join(sorted(missing))}. "
                f"Say e.g. `create cluster {name} "
                + " ".join(f"{m.lower()}=..." for m in sorted(missing))
                + "`."
            )
        unknown = sorted(set(variables) - used - {"CLUSTER_NAME"})
        if unknown:
            raise CommandError(
                f"Template {intent.template or 'default'} has no variable {', '.join(unknown)}. "
                f"Its variables: {', '.join(sorted(used))}."
            )
        checks = [check_yaml(rendered)]
        texts = {e.path: e.after for e in rendered}
        kdirs = {str(PurePosixPath(p).parent) for p in texts if PurePosixPath(p).name == "kustomization.yaml"}
        for kdir in sorted(kdirs):
            if not any(kdir.startswith(outer + "/") for outer in kdirs):  # nested ones build with their parent
                checks.append(build_files(texts, kdir))
        objs = [
            d
            for e in rendered
            if e.path.endswith((".yaml", ".yml"))
            for d in load_all(e.after)
            if isinstance(d, dict)
        ]
        checks.extend(check_objects(objs, self.options.kubernetes_version, self.crds(snap)))
        checks.append(check_object_names(objs))
        failed = [c for c in checks if not c.ok]
        if failed:
            raise ValidationFailed(
                "The rendered cluster manifests failed validation: "
                + "; ".join(f"{c.name}: {c.detail}" for c in failed)
            )
        fields = [FieldChange(name, "", "cluster", None, f"{dest}/ ({len(rendered)} files)", dest)]
        return Change(
            intent,
            self.index.base_ref,
            snap.sha,
            tuple(rendered),
            tuple(fields),
            f"Create cluster {name}",
            tuple(checks),
            _bundled_template_note(snap, intent.template or "default", cfg.templates),
        )

    def _template_files(self, snap: Snapshot, template: str, repo_dir: str) -> list[tuple[str, str]]:
        paths.segment(template, "template")
        base = paths.repo_path(f"{repo_dir}/{template}", f"template {template}")
        repo_files = snap.files_under(base)
        if repo_files:
            snap.prefetch(repo_files)
            return [(p[len(base) + 1 :], snap.read(p)) for p in repo_files if not p.endswith("template.yaml")]
        bundled = BUNDLED_TEMPLATES / template
        if bundled.is_dir():
            return [
                (str(p.relative_to(bundled)), p.read_text())
                for p in sorted(bundled.rglob("*"))
                if p.is_file() and p.name != "template.yaml"
            ]
        available = sorted(
            {PurePosixPath(p[len(repo_dir) + 1 :]).parts[0] for p in snap.files_under(repo_dir)}
        )
        available += (
            sorted(p.name for p in BUNDLED_TEMPLATES.iterdir() if p.is_dir())
            if BUNDLED_TEMPLATES.is_dir()
            else []
        )
        raise CommandError(f'No cluster template "{template}". Templates: {", ".join(available) or "none"}.')


def _check_tag(tag: str) -> None:
    if not valid_tag(tag):
        raise CommandError(
            f'"{tag}" is not a valid image tag: use letters, digits, "_", "." and "-", starting with a letter, '
            'digit or "_", at most 128 characters.'
        )


def _layout_name(t: Target) -> str:
    if t.is_helmrelease:
        return "a Flux HelmRelease"
    return {"helm": "a Helm values file", "kustomize": "kustomize", "plain": "plain manifests"}[t.layout]


def _cross_layout(app: str, s: Target, src: Version, t: Target) -> str:
    """Promote copies like for like; across layouts the person says the version, and this says which."""
    head = (
        f"{app} is deployed with {_layout_name(s)} in {s.env.name} and with {_layout_name(t)} in {t.env.name}, "
        "so opsbot cannot copy one onto the other."
    )
    tag = src.tag if (s.is_helmrelease or s.layout == "helm") else src.primary_tag(app)
    if t.is_helmrelease or not tag:
        return f"{head} Say `deploy {app} <version> to {t.env.name}` with the version {t.env.name} should run."
    return f"{head} {s.env.name} runs image tag {tag}: say `deploy {app} {tag} to {t.env.name}` to run it there."


def _s(v: Any) -> str | None:
    return None if v is None else str(v)


def _replicas(n: int | None) -> str:
    return wording.replicas(n) if n is not None else "an unset number of replicas"


def _bundled_template_note(snap: Snapshot, template: str, templates_dir: str) -> tuple[str, ...]:
    """The bundled default runs on Cluster API's Docker provider: fine to try opsbot, wrong for a real
    cluster, so a proposal built from it says so rather than look like the real thing."""
    if template != "default" or snap.files_under(f"{templates_dir}/{template}"):
        return ()
    return (
        f"The repo has no cluster template at {templates_dir}/default/, so this uses opsbot's bundled "
        "default template: Cluster API's Docker provider (CAPD), a test provider that runs nodes as "
        f"containers, not for real clusters. Add your own template under {templates_dir}/<name>/ "
        "for your infrastructure.",
    )
