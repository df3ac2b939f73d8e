"""Planning for Helm-backed apps: which chart, which values key, where a chartRef's version lives,
and the render proof of a change (DESIGN §5.3).

Why apart from the planner: the planner decides *what* changes for every layout; this module owns
what only Helm needs to know, so the planner stays one screen per verb and the Helm engine stays
behind opsbot.manifests.helm.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

from opsbot.core.model import Check
from opsbot.errors import CommandError
from opsbot.manifests import edits as E
from opsbot.manifests import helmproof
from opsbot.manifests.index import Index, SourceDoc, Target
from opsbot.manifests.yamledit import load_all


class ChartPlanner:
    """Helm decisions for one Index; `cache_dir`/`fetch` say where charts from elsewhere come from."""

    def __init__(self, index: Index, cache_dir: Path | None, *, fetch: bool) -> None:
        self.index = index
        self.cache_dir = cache_dir
        self.fetch = fetch

    def chart(self, t: Target, hr: dict[str, Any] | None = None, version: str | None = None) -> helmproof.ChartSource:
        if t.layout == "helm":
            return helmproof.in_repo(t.snap, str(PurePosixPath(t.root).parent))
        return helmproof.helmrelease_chart(
            hr or t.rendered,
            t.objects,
            t.snap,
            version=version,
            cache_dir=self.cache_dir,
            fetch=self.fetch,
        )

    def env_values(self, t: Target, hr: dict[str, Any] | None = None) -> dict[str, Any]:
        if t.layout == "helm":
            return t.source.data if t.source and isinstance(t.source.data, dict) else {}
        return t.helm_values(hr)

    def replicas_key(self, t: Target, pinned: str | None) -> str:
        """The values key this chart reads its replica count from: pinned, else found by rendering.

        Why not just `replicaCount`: many charts read another key (loki: `singleBinary.replicas`), and
        writing a key that nothing reads would be a PR that changes nothing while looking right."""
        if pinned:
            return pinned
        if t.layout == "helm":
            # the merged values are known: one candidate needs no probing, as the render proof of the
            # change itself fails the gate if nothing reads it (one Helm run instead of two)
            only = helmproof.candidate_replica_keys(t.rendered)
            if len(only) == 1:
                return only[0]
        src = self.chart(t)
        found = helmproof.replica_keys(
            src,
            self.env_values(t),
            release=release_name(t),
            namespace=release_namespace(t),
            merged=t.rendered if t.layout == "helm" else None,
        )
        pin = f"apps: {{{t.app}: {{helm: {{replicas: KEY}}}}}}"
        if found is None:
            values = t.rendered if t.layout == "helm" else self.env_values(t)
            found_in_values = helmproof.candidate_replica_keys(values)
            if len(found_in_values) == 1:
                return found_in_values[0]
            why = src.skipped or "the chart does not render"
            raise CommandError(
                f"Cannot tell which values key sets {t.app}'s replicas in {t.env.name}: the chart could not be "
                f"rendered ({why}) and its values have "
                + (f"several candidates ({', '.join(found_in_values)})" if found_in_values else "no replicaCount/replicas key")
                + f". Pin it in .opsbot.yaml: `{pin}`."
            )
        if len(found) == 1:
            return found[0]
        if not found:
            raise CommandError(
                f"Nothing in {src.where}'s templates takes {t.app}'s replica count from a values key named "
                f"replicaCount or replicas, so opsbot has no key to set. If another key does, pin it in "
                f".opsbot.yaml: `{pin}`."
            )
        raise CommandError(
            f"{src.where} reads replica counts from {len(found)} values keys ({', '.join(found)}); opsbot will not "
            f"guess which one {t.app} means. Pin it in .opsbot.yaml: `{pin.replace('KEY', found[0])}`."
        )

    def proof(
        self, es: E.EditSet, t: Target, rendered: list[dict[str, Any]] | None
    ) -> tuple[Check, list[dict[str, Any]]] | None:
        """Render the chart before and after (DESIGN §5.3): only the targeted fields may move."""
        if es.render_field is None or not (t.layout == "helm" or t.is_helmrelease):
            return None
        field, value = es.render_field
        if t.layout == "helm":
            after_docs = load_all(es.text(t.root)) if es.exists(t.root) else []
            after_values = after_docs[0] if after_docs and isinstance(after_docs[0], dict) else {}
            return helmproof.verify(
                self.chart(t), self.env_values(t), after_values, field, value,
                release=release_name(t), namespace=release_namespace(t),
            )
        hr_after = self._helmrelease_after(es, t, rendered)
        if hr_after is None:
            return Check(helmproof.CHECK, True, "skipped: the edited HelmRelease could not be read back", skipped=True), []
        if field == "chart version":
            src = self.chart(t, hr_after, version=str(value))
            check, objs = helmproof.render_check(
                src, self.env_values(t, hr_after), release=release_name(t), namespace=release_namespace(t)
            )
        else:
            check, objs = helmproof.verify(
                self.chart(t), self.env_values(t), self.env_values(t, hr_after), field, value,
                release=release_name(t), namespace=release_namespace(t),
            )
        if check.ok and not check.skipped and (hr_after.get("spec") or {}).get("valuesFrom"):
            # values from ConfigMaps/Secrets live in the cluster: say the proof was made without them
            check = Check(check.name, True, check.detail + " (rendered without its valuesFrom)")
        return check, objs

    def _helmrelease_after(
        self, es: E.EditSet, t: Target, rendered: list[dict[str, Any]] | None
    ) -> dict[str, Any] | None:
        me = (t.rendered.get("metadata") or {}).get("name")
        if rendered is not None:
            hits = [o for o in rendered if o.get("kind") == t.kind and (o.get("metadata") or {}).get("name") == me]
            return hits[0] if hits else None
        if t.source is None:
            return None
        docs = load_all(es.text(t.source.file))
        doc = docs[t.source.doc] if t.source.doc < len(docs) else None
        return doc if isinstance(doc, dict) else None

    def set_source_version(
        self, es: E.EditSet, t: Target, obj: dict[str, Any], path: list[str], version: str
    ) -> None:
        """A chartRef release's version lives in its OCIRepository/HelmChart: edit it there, if it is its own."""
        ref = (t.rendered.get("spec") or {}).get("chartRef") or {}
        kind, name = str(ref.get("kind")), str(ref.get("name"))
        env = t.env.name
        if not obj:
            raise CommandError(
                f"{t.app} in {env} takes its chart from {kind} {name} (chartRef), which {env} does not define, "
                "so opsbot cannot change its version."
            )
        sharers = sorted(
            str((o.get("metadata") or {}).get("name"))
            for o in t.objects
            if o is not t.rendered
            and o.get("kind") == "HelmRelease"
            and ((o.get("spec") or {}).get("chartRef") or {}).get("kind") == kind
            and ((o.get("spec") or {}).get("chartRef") or {}).get("name") == name
            and (o.get("metadata") or {}).get("name") != (t.rendered.get("metadata") or {}).get("name")
        )
        if sharers:
            raise CommandError(
                f"{kind} {name} serves {', '.join(sharers)} as well as {t.app} in {env}; changing its version "
                f"would upgrade them too. Give {t.app} its own {kind} first."
            )
        graph = self.index.graph(t.snap)
        files = graph.closure(t.root)[1] if t.layout == "kustomize" else [
            f for f in t.snap.files_under(t.root) if f.endswith((".yaml", ".yml"))
        ]
        found = [
            SourceDoc(f, i, d)
            for f in files
            if f.endswith((".yaml", ".yml")) and f not in graph.patch_files(t.root)
            for i, d in enumerate(self.index.docs(t.snap, f))
            if isinstance(d, dict) and d.get("kind") == kind and (d.get("metadata") or {}).get("name") == name
        ]
        if len(found) != 1:
            raise CommandError(
                f"{kind} {name} of {t.app} is defined {len(found)} times in {env}; opsbot edits one definition only."
            )
        src = Target(
            t.app, t.env, t.snap, t.layout, t.root, kind, name, found[0], obj,
            objects=t.objects, chain=graph.chain_to(t.root, found[0].file) if t.layout == "kustomize" else [],
        )
        E.set_helmrelease(self.index, es, src, list(path), version, "chart version")


def release_name(t: Target) -> str:
    """The Helm release name as Flux derives it (spec.releaseName, else [targetNamespace-]name)."""
    if not t.is_helmrelease:
        return t.name
    spec = t.rendered.get("spec") or {}
    name = str((t.rendered.get("metadata") or {}).get("name", t.name))
    if spec.get("releaseName"):
        return str(spec["releaseName"])
    return f"{spec['targetNamespace']}-{name}" if spec.get("targetNamespace") else name


def release_namespace(t: Target) -> str:
    if not t.is_helmrelease:
        return t.env.name
    spec = t.rendered.get("spec") or {}
    meta = t.rendered.get("metadata") or {}
    return str(spec.get("targetNamespace") or meta.get("namespace") or "default")
