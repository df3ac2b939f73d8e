"""Image references and versions, parsed the way registries and kustomize read them."""

from __future__ import annotations

import re
from dataclasses import dataclass

# Docker's tag grammar: [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}
TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
# Helm chart versions are SemVer 2; Flux also accepts ranges like 6.5.* or >=1.0.0
CHART_VERSION_RE = re.compile(r"^[0-9A-Za-z.*+^~<>=|, -]{1,64}$")


@dataclass(frozen=True)
class ImageRef:
    name: str  # registry/repo, without tag or digest
    tag: str | None
    digest: str | None

    def with_tag(self, tag: str) -> str:
        return f"{self.name}:{tag}"

    def __str__(self) -> str:
        out = self.name
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out


def parse_image(ref: str) -> ImageRef:
    digest = None
    if "@" in ref:
        ref, digest = ref.split("@", 1)
    name, tag = ref, None
    slash = ref.rfind("/")
    colon = ref.rfind(":")
    if colon > slash:
        name, tag = ref[:colon], ref[colon + 1 :]
    return ImageRef(name=name, tag=tag, digest=digest)


def valid_tag(tag: str) -> bool:
    return bool(TAG_RE.match(tag))


def valid_chart_version(version: str) -> bool:
    return bool(CHART_VERSION_RE.match(version)) and any(c.isdigit() for c in version)


_RANGE = re.compile(r"[<>=~^*|, ]|(^|\.)[xX*](\.|$)")


def is_version_range(version: str) -> bool:
    """A semver constraint (">=1.0.0-alpha", "66.x", "~1.2") rather than one version: Flux picks the
    newest match at reconcile time, so the repo alone does not say what runs."""
    return bool(_RANGE.search(version.strip()))
