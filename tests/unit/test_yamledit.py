"""Surgical edits: only the meant bytes change; types survive YAML 1.1; refusals are clear."""

from __future__ import annotations

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from opsbot.manifests.yamledit import EditError, Sel, append_item, render_scalar, set_value

DOC = """# comment before the marker
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web   # trailing comment
  annotations:
    long: "a very long annotation value that goes well beyond eighty columns of text, on purpose"
spec:
  replicas: 2
  template:
    spec:
      containers:
      - name: web
        image: 'ghcr.io/acme/web:1.0.0'   # {"$imagepolicy": "x"}
        args: ["--port", "8080"]
        env:
          - name: MODE
            value: yes
---
apiVersion: v1
kind: Service
metadata: {name: web}
...
"""


def changed_lines(a: str, b: str) -> list[tuple[str, str]]:
    la, lb = a.splitlines(), b.splitlines()
    assert len(la) == len(lb)
    return [(x, y) for x, y in zip(la, lb, strict=True) if x != y]


def test_scalar_splice_keeps_every_other_byte() -> None:
    out = set_value(DOC, 0, ["spec", "replicas"], 5)
    assert changed_lines(DOC, out) == [("  replicas: 2", "  replicas: 5")]


def test_quote_style_and_comment_column_survive() -> None:
    path = ["spec", "template", "spec", "containers", Sel("name", "web"), "image"]
    out = set_value(DOC, 0, path, "ghcr.io/acme/web:1.10.100")
    assert changed_lines(DOC, out) == [
        (
            '        image: \'ghcr.io/acme/web:1.0.0\'   # {"$imagepolicy": "x"}',
            '        image: \'ghcr.io/acme/web:1.10.100\'   # {"$imagepolicy": "x"}',
        )
    ]


@pytest.mark.parametrize("value", ["1.10", "yes", "on", "null", "0755", "1e3", "~", "true"])
def test_values_yaml_would_retype_are_quoted_and_read_back_as_strings(value: str) -> None:
    out = set_value("tag: 1.0.0\n", 0, ["tag"], value)
    assert yaml.safe_load(out) == {"tag": value}
    assert out == f'tag: "{value}"\n'


def test_int_into_quoted_string_is_refused_not_retyped() -> None:
    with pytest.raises(EditError, match="will not change its type"):
        set_value('replicas: "2"\n', 0, ["replicas"], 3)


def test_missing_keys_are_inserted_at_the_right_indent() -> None:
    text = "spec:\n  values:\n    replicaCount: 1\n  other: 1\n"
    out = set_value(text, 0, ["spec", "values", "image", "tag"], "6.5.1")
    assert out == "spec:\n  values:\n    replicaCount: 1\n    image:\n      tag: 6.5.1\n  other: 1\n"


def test_insert_into_empty_flow_mapping() -> None:
    out = set_value("spec:\n  values: {}\n", 0, ["spec", "values", "replicaCount"], 3)
    assert yaml.safe_load(out) == {"spec": {"values": {"replicaCount": 3}}}


def test_list_entries_are_appended_in_the_files_style() -> None:
    text = 'images:\n  - name: a\n    newTag: "1"\nreplicas: []\n'
    out = append_item(text, 0, ["images"], {"name": "b", "newTag": "2"})
    assert out == 'images:\n  - name: a\n    newTag: "1"\n  - name: b\n    newTag: "2"\nreplicas: []\n'


def test_new_top_level_list_goes_before_the_end_marker() -> None:
    out = append_item(DOC, 1, ["spec"] if False else ["ports"], {"port": 80})
    assert yaml.safe_load_all(out) is not None
    docs = list(yaml.safe_load_all(out))
    assert docs[1]["ports"] == [{"port": 80}]
    assert out.rstrip().endswith("...")


def test_refusals_are_specific() -> None:
    with pytest.raises(EditError, match="block scalar"):
        set_value("a: |\n  x\n", 0, ["a"], "y")
    with pytest.raises(EditError, match="flow mapping"):
        set_value("m: {a: 1}\n", 0, ["m", "b"], 2)
    with pytest.raises(EditError, match=r"not a single value|mapping"):
        set_value("m:\n  a: 1\n", 0, ["m"], 2)
    with pytest.raises(EditError, match="not valid YAML"):
        set_value("a: [\n", 0, ["a"], 1)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=20))
def test_any_text_value_reads_back_as_itself(value: str) -> None:
    try:
        out = set_value("k: v\nother: 1\n", 0, ["k"], value)
    except EditError:
        return  # refused clearly is fine; silently retyped is not
    assert yaml.safe_load(out) == {"k": value, "other": 1}


def test_render_scalar_round_trips_plain_when_safe() -> None:
    assert render_scalar("1.2.3") == "1.2.3"
    assert render_scalar("1.10") == '"1.10"'
    assert render_scalar(3) == "3"


def test_crlf_files_keep_crlf_when_lines_are_inserted() -> None:
    text = "spec:\r\n  values:\r\n    replicaCount: 1\r\n"
    out = set_value(text, 0, ["spec", "values", "image", "tag"], "6.5.1")
    assert out == "spec:\r\n  values:\r\n    replicaCount: 1\r\n    image:\r\n      tag: 6.5.1\r\n"
    out = set_value(text, 0, ["spec", "values", "replicaCount"], 3)
    assert out == text.replace("replicaCount: 1", "replicaCount: 3")
    listed = append_item("images:\r\n- name: a\r\n  newTag: x\r\n", 0, ["images"], {"name": "b", "newTag": "y"})
    assert listed == "images:\r\n- name: a\r\n  newTag: x\r\n- name: b\r\n  newTag: y\r\n"
