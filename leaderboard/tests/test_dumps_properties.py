"""import_battles on random mixes of good and bad lines: all or nothing, or exactly the good."""

import io
import json
import re

import pytest
from django.core.management import CommandError, call_command
from django.db import transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leaderboard.models import ImportedVote
from llm_providers.models import LLMModel

NAMES = ["alpha-7b", "bravo-13b", "charlie-70b"]
LISTED = 20  # bad lines the command lists one by one (the rest are counted)

good_lines = st.builds(
    lambda pair, winner, tstamp, turn: {
        "model_a": pair[0],
        "model_b": pair[1],
        "winner": winner,
        "tstamp": tstamp,
        "turn": turn,
        "anony": True,
        "language": "English",
    },
    st.permutations(NAMES).map(lambda names: names[:2]),
    st.sampled_from(["model_a", "model_b", "tie", "tie (bothbad)"]),
    st.floats(1e9, 2e9),
    st.integers(1, 5),
)
BAD_LINES = [
    "{not json",
    "[1, 2, 3]",
    '"just a string"',
    json.dumps({"model_a": "alpha-7b", "winner": "tie", "tstamp": 1.7e9}),
    json.dumps({"model_a": "alpha-7b", "model_b": "alpha-7b", "winner": "tie", "tstamp": 1.7e9}),
    json.dumps({"model_a": "alpha-7b", "model_b": "bravo-13b", "winner": "a", "tstamp": 1.7e9}),
    json.dumps({"model_a": "alpha-7b", "model_b": "bravo-13b", "winner": "tie", "tstamp": "x"}),
    json.dumps(
        {"model_a": "alpha-7b", "model_b": "bravo-13b", "winner": "tie", "tstamp": 1.7e9, "turn": 0}
    ),
    json.dumps({"model_a": "", "model_b": "bravo-13b", "winner": "tie", "tstamp": 1.7e9}),
]
# ("good", line) or ("bad", line) or ("blank", ""): a file's lines in order.
mixes = st.lists(
    st.one_of(
        good_lines.map(lambda line: ("good", line)),
        st.sampled_from(BAD_LINES).map(lambda line: ("bad", line)),
        st.just(("blank", "   ")),
    ),
    min_size=1,
    max_size=30,
)


def write(path, mix) -> tuple[list[int], set[str]]:
    """Write the file; return the bad line numbers and the question ids of the good lines."""
    lines, bad, good = [], [], set()
    for number, (kind, line) in enumerate(mix, start=1):
        if kind == "good":
            line = json.dumps(line | {"question_id": f"q{number}"})
            good.add(f"q{number}")
        elif kind == "bad":
            bad.append(number)
        lines.append(line)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return bad, good


def run(path, *args) -> tuple[str | None, str]:
    """(the CommandError's message or None, stderr) of import_battles on the file."""
    err = io.StringIO()
    try:
        call_command("import_battles", str(path), *args, stdout=io.StringIO(), stderr=err)
    except CommandError as exc:
        return str(exc), err.getvalue()
    return None, err.getvalue()


def listed_lines(stderr: str) -> list[int]:
    return [int(n) for n in re.findall(r"^line (\d+): \S", stderr, re.M)]


@pytest.mark.django_db
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(mix=mixes)
def test_by_default_a_file_with_any_bad_line_imports_nothing_and_names_every_bad_line(
    tmp_path, mix
):
    bad, good = write(tmp_path / "dump.jsonl", mix)
    catalog = LLMModel.objects.count()
    with transaction.atomic():
        error, stderr = run(tmp_path / "dump.jsonl")
        if bad:
            assert error and "nothing was imported" in error and f"{len(bad)} bad line" in error
            assert listed_lines(stderr) == bad[:LISTED]
            if len(bad) > LISTED:
                assert f"and {len(bad) - LISTED:,} more bad lines" in stderr
            assert ImportedVote.objects.count() == 0
            assert LLMModel.objects.count() == catalog, "a rejected file added catalog entries"
        else:
            assert error is None, error
            assert set(ImportedVote.objects.values_list("external_id", flat=True)) == good
        transaction.set_rollback(True)


@pytest.mark.django_db
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(mix=mixes)
def test_with_skip_bad_exactly_the_good_lines_are_imported_and_the_bad_ones_listed(tmp_path, mix):
    bad, good = write(tmp_path / "dump.jsonl", mix)
    with transaction.atomic():
        error, stderr = run(tmp_path / "dump.jsonl", "--skip-bad")
        assert error is None, error
        assert set(ImportedVote.objects.values_list("external_id", flat=True)) == good
        assert listed_lines(stderr) == bad[:LISTED]
        transaction.set_rollback(True)
