"""Reading votes into counts: the style sums the tally hands the engine."""

import random

import numpy as np
import pytest
from django.utils import timezone

from battles.models import Vote
from leaderboard.exclusions import filter_plan
from leaderboard.models import ImportedVote
from leaderboard.tally import VoteTallies, _Table


def test_the_database_fills_the_style_differences_when_a_vote_is_written(three_models, make_vote):
    alpha, bravo, _ = three_models
    vote = make_vote(
        alpha,
        bravo,
        "a",
        style={
            "a": {"length": 900, "headers": 2, "lists": 0, "bold": 1},
            "b": {"length": 300, "lists": 3},  # a missing count is zero
        },
    )
    vote.refresh_from_db()
    assert vote.style_length == pytest.approx(600 / 1201)
    assert vote.style_headers == pytest.approx(2 / 3)
    assert vote.style_lists == pytest.approx(-3 / 4)
    assert vote.style_bold == pytest.approx(1 / 2)
    imported = ImportedVote.objects.create(
        external_id="q1",
        model_a=alpha,
        model_b=bravo,
        choice="b",
        style={"a": {"length": 10}, "b": {"length": 30}},
        created_at=vote.created_at,
    )
    imported.refresh_from_db()
    assert imported.style_length == pytest.approx(-20 / 41)
    assert imported.style_bold == 0


def test_the_style_sums_per_choice_equal_the_sums_over_the_votes(three_models, make_vote):
    alpha, bravo, charlie = three_models
    rng = random.Random(3)
    pairs = [(alpha, bravo), (bravo, alpha), (bravo, charlie), (charlie, alpha)]
    for _ in range(80):
        a, b = rng.choice(pairs)
        make_vote(
            a,
            b,
            rng.choice(["a", "b", "tie", "bothbad"]),
            style={
                side: {
                    f: rng.randint(0, 900 if f == "length" else 4)
                    for f in ("length", "headers", "lists", "bold")
                }
                for side in ("a", "b")
            },
        )
    tallies = VoteTallies(cutoff=timezone.now(), plan=filter_plan(), style=True, languages=False)
    overall = tallies.category("overall")
    for row, (a, b) in enumerate(zip(overall.model_a, overall.model_b, strict=True)):
        votes = list(Vote.objects.filter(model_a_id=a, model_b_id=b))
        for outcome, choice in enumerate(["a", "b", "tie", "bothbad"]):
            x = np.array(
                [
                    [v.style_length, v.style_headers, v.style_lists, v.style_bold]
                    for v in votes
                    if v.choice == choice
                ]
            ).reshape(-1, 4)
            np.testing.assert_allclose(overall.style_x[row, outcome], x.sum(axis=0), atol=1e-9)
            np.testing.assert_allclose(overall.style_xx[row, outcome], x.T @ x, atol=1e-9)
            assert overall.style_ids[row, outcome] == sum(v.pk for v in votes if v.choice == choice)


@pytest.mark.parametrize("seed", range(6))
def test_tables_add_up_key_by_key_whether_combined_at_once_or_into_a_large_one(seed):
    """A refresh adds small tables (tail, corrections, moves) into the large stored one
    lazily, by a search per small row; the sums are those of adding every row by key."""
    rng = np.random.default_rng(seed)

    def table(size: int, reasons: int) -> tuple[_Table, dict]:
        keys = [
            (int(rng.integers(1, 40)), int(rng.integers(1, 40)), int(rng.integers(0, reasons)))
            for _ in range(size)
        ]
        values = rng.integers(-5, 9, size=(size, 3)).astype(float)
        expected: dict = {}
        for key, row in zip(keys, values, strict=True):
            expected[key] = expected.get(key, 0) + row
        return _Table(np.array(keys).T, values), expected

    large, total = table(900, 1)
    before = large.values.copy()
    parts = [(large, 1.0)]
    for _ in range(int(rng.integers(1, 5))):
        small, sums = table(int(rng.integers(1, 40)), 4)
        sign = float(rng.choice([-1.0, 1.0]))
        parts.append((small, sign))
        for key, row in sums.items():
            total[key] = total.get(key, 0) + sign * row
    combined = _Table.combined(parts, 3)
    assert combined._pending  # nothing added yet: the large table's arrays are shared
    keys = map(tuple, np.column_stack(combined.columns).tolist())
    got = dict(zip(keys, combined.values, strict=True))
    assert sorted(got) == sorted(total)
    for key, row in total.items():
        assert np.array_equal(got[key], row), key
    keys = np.column_stack(combined.columns)
    assert (np.lexsort(keys.T[::-1]) == np.arange(len(keys))).all()  # still sorted by key
    assert np.array_equal(large.values, before)  # the shared arrays were not written to
