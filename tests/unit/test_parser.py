"""The one grammar: every spelling reaches the same intent; wrong words get usage and a suggestion."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from commands import REGISTRY
from opsbot.core.model import (
    Approve,
    Cancel,
    CreateCluster,
    Deploy,
    Help,
    History,
    Merge,
    Promote,
    Rollback,
    Scale,
    ScaleBounds,
    Status,
)
from opsbot.core.parser import UsageError
from opsbot.errors import CommandError


def parse(text: str) -> object:
    return REGISTRY.parse(text)[1]


@pytest.mark.parametrize(
    ("text", "intent"),
    [
        ("scale frontend 5 in production", Scale("frontend", "production", 5)),
        ("SCALE Frontend 5 IN Production", Scale("frontend", "production", 5)),
        ("scale frontend 5 --env production", Scale("frontend", "production", 5)),
        ("scale frontend 5 --env=production", Scale("frontend", "production", 5)),
        ("scale frontend 5 env=production", Scale("frontend", "production", 5)),
        ("scale frontend replicas=5 in production", Scale("frontend", "production", 5)),
        ("scale frontend to 5 in production", Scale("frontend", "production", 5)),
        ("/ops scale frontend 0 in dev", Scale("frontend", "dev", 0)),
        ("scale api 2-10 in production", ScaleBounds("api", "production", 2, 10)),
        ("promote api from staging to production", Promote("api", "production", "staging")),
        ("promote api to production", Promote("api", "production", None)),
        ("promote api --from staging --env production", Promote("api", "production", "staging")),
        ("deploy api 2.4.0 to production", Deploy("api", "2.4.0", "production")),
        ("deploy api V2.4.0-RC.1 in staging", Deploy("api", "V2.4.0-RC.1", "staging")),
        ("deploy api version=1.2 env=dev", Deploy("api", "1.2", "dev")),
        ("rollback api in production", Rollback("api", "production", None)),
        ("rollback api in production to 2.3.0", Rollback("api", "production", "2.3.0")),
        ("create cluster edge-3", CreateCluster("edge-3", None, ())),
        (
            "create cluster edge-3 from aws-small region=eu-west-1",
            CreateCluster("edge-3", "aws-small", (("region", "eu-west-1"),)),
        ),
        ("status", Status(None, None)),
        ("status api in production", Status("api", "production")),
        ("history api", History("api", None)),
        ("approve R7", Approve("R7")),
        ("merge #12", Merge("12")),
        ("cancel r3", Cancel("r3")),
        ("help", Help(None)),
        ("help scale", Help("scale")),
        ("", Help(None)),
    ],
)
def test_grammar(text: str, intent: object) -> None:
    assert parse(text) == intent


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("sacle frontend 5 in production", ['Did you mean "scale"?']),
        ("scale frontend 5", ["Say which environment", "Usage: scale"]),
        ("scale frontend in production", ["how many replicas", "Usage: scale"]),
        ("scale frontend -3 in production", ["0 or more"]),
        ("scale frontend many in production", ['whole number, not "many"']),
        ("scale frontend 9-2 in production", ["min (9) is above max (2)"]),
        ("scale frontend 0-2 in production", ["at least 1"]),
        ("scale frontend 5 in production in staging", ["given twice"]),
        ("promote api", ["Say where to"]),
        ("deploy api to production", ["Say which version"]),
        ("create database x", ["clusters only"]),
        ("create cluster", ["name"]),
        ("create cluster a b", ["key=value"]),
        ("frobnicate", ["Unknown command"]),
        ("scale frontend 5 in production --colour red", ["Unknown option --colour"]),
        ("scale front$end 5 in production", ["not a valid app name"]),
        ("approve", ["Say which request"]),
    ],
)
def test_wrong_words_get_clear_messages(text: str, words: list[str]) -> None:
    with pytest.raises(CommandError) as info:
        parse(text)
    for w in words:
        assert w in str(info.value)


def test_usage_error_carries_the_commands_usage() -> None:
    with pytest.raises(UsageError) as info:
        parse("rollback api")
    assert info.value.usage.startswith("rollback <app> in <env>")


def test_overlong_and_control_characters_are_refused() -> None:
    with pytest.raises(CommandError, match="at most 1000"):
        parse("scale " + "a" * 2000 + " 1 in dev")
    with pytest.raises(CommandError, match="control or invisible character"):
        parse("scale web\x00 1 in dev")


@pytest.mark.parametrize(("text", "code"), [("scale web 1 in dev\x7f", "U+007F"), ("scale web\u0085 1 in dev", "U+0085"),
                                           ("scale web 1 in \u202edev", "U+202E"), ("scale w\u200beb 1 in dev", "U+200B"),
                                           ("scale web 1 in dev\ue000", "U+E000")])
def test_del_c1_bidi_zero_width_and_private_use_characters_are_refused(text: str, code: str) -> None:
    """What a reviewer reads must be what opsbot acts on: invisible characters are named and refused."""
    with pytest.raises(CommandError, match=re.escape(f"invisible character ({code})")):
        parse(text)


WORDS = st.sampled_from(
    [
        "scale",
        "promote",
        "deploy",
        "rollback",
        "create",
        "cluster",
        "status",
        "history",
        "approve",
        "merge",
        "cancel",
        "help",
        "in",
        "to",
        "from",
        "--env",
        "env=prod",
        "--from",
        "1",
        "2-3",
        "-1",
        "web",
        "prod",
        "x=y",
        "=",
        "--",
        "#1",
        "R1",
        "1.10",
        "yes",
        "é",
        "\u201cweb\u201d",
        "\t",
        "…",
    ]
)


@settings(max_examples=600, deadline=None)
@given(st.lists(WORDS | st.text(max_size=12), max_size=8).map(" ".join))
def test_fuzzed_input_only_ever_raises_command_errors(text: str) -> None:
    try:
        command, intent = REGISTRY.parse(text)
    except CommandError as exc:
        assert str(exc)
    else:
        assert intent.verb in {"create-cluster", *REGISTRY.names()} or command.name in REGISTRY.names()
