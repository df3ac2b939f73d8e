"""The console's text face of results (what testdrive prints): cut diffs say so, counts are singular."""

from __future__ import annotations

from opsbot.chat.console import DIFF_LINES, render
from opsbot.core.model import Change, Check, FieldChange, Scale
from opsbot.core.results import Proposed, RequestUpdate

SCALE = Scale(app="cache", env="production", replicas=3)
CHANGE = Change(SCALE, "main", "0" * 40, (), (FieldChange("cache", "production", "replicas", "1", "3", "f.yaml"),),
                "Scale cache to 3 replicas in production", (Check("YAML", True),))


def test_a_cut_diff_ends_with_how_many_lines_were_left_out() -> None:
    diff = "".join(f"+line {i}\n" for i in range(DIFF_LINES + 7))
    lines = render(Proposed(SCALE, change=CHANGE, diff=diff)).splitlines()
    assert lines[-1] == "   │ … (7 more lines)"
    assert f"   │ +line {DIFF_LINES - 1}" in lines and f"   │ +line {DIFF_LINES}" not in lines
    one_more = render(Proposed(SCALE, change=CHANGE, diff="".join(f"+l{i}\n" for i in range(DIFF_LINES + 1))))
    assert one_more.splitlines()[-1] == "   │ … (1 more line)"


def test_a_diff_that_fits_is_shown_whole_without_a_cut_note() -> None:
    diff = "".join(f"+line {i}\n" for i in range(DIFF_LINES))
    text = render(Proposed(SCALE, change=CHANGE, diff=diff))
    assert "more line" not in text and f"+line {DIFF_LINES - 1}" in text


def test_mentions_are_shown_as_at_names() -> None:
    text = render(RequestUpdate(None, event="merged", message="Merged by <@bob> as abc1234."))
    assert text == "opsbot: Merged by @bob as abc1234."
