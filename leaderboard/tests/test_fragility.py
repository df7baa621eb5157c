"""Rank fragility: the fewest votes whose removal swaps two models, against brute force."""

import itertools
import re

import numpy as np
import pytest

from leaderboard import recompute, refresh
from leaderboard.engine import PairCounts, RatingOptions, fit, fragility
from leaderboard.engine.fragility import SWAP_MARGIN

# Log-odds scale with no offset, so ratings compare like the engine's beta.
RAW = RatingOptions(ci="none", scale=1.0, base=float(np.e), init_rating=0.0)


def counts(rows: list[tuple[int, int, int, int, int]]) -> PairCounts:
    a, b, wins_a, wins_b, ties = (np.array(col) for col in zip(*rows, strict=True))
    return PairCounts(a, b, wins_a, wins_b, ties, np.zeros_like(a))


def removals(limits: list[int], k: int):
    """Every way to remove k votes from cells holding `limits` votes (one count per cell)."""
    if not limits:
        if k == 0:
            yield ()
        return
    for first in range(min(limits[0], k) + 1):
        for rest in removals(limits[1:], k - first):
            yield (first, *rest)


def brute_force(table: PairCounts, n: int, upper: int, lower: int) -> int | None:
    """Try every set of removed votes, smallest first, refitting with the engine."""
    cells = np.column_stack([table.wins_a, table.wins_b, table.ties]).astype(int)
    for k in range(1, int(cells.sum()) + 1):
        for removed in removals(cells.ravel().tolist(), k):
            left = cells - np.reshape(removed, cells.shape)
            no_both_bad = np.zeros_like(table.model_a)
            ratings = fit(
                PairCounts(table.model_a, table.model_b, *left.T, no_both_bad), n, RAW
            ).ratings
            if ratings[lower] - ratings[upper] > SWAP_MARGIN:
                return k
    return None


def ranked(table: PairCounts, n: int) -> list[int]:
    return [int(i) for i in np.argsort(-fit(table, n, RAW).ratings, kind="stable")]


CONSTRUCTED = [
    # A close pair at the top, a clear third: the top spot rests on a couple of votes.
    [(0, 1, 2, 1, 1), (0, 2, 2, 0, 0), (1, 2, 2, 1, 0)],
    # A chain through a middle model only: 0 and 2 never met.
    [(0, 1, 3, 1, 1), (1, 2, 2, 1, 1)],
]


@pytest.mark.parametrize("rows", CONSTRUCTED)
def test_the_fewest_votes_to_swap_each_adjacent_pair_match_brute_force(rows):
    table = counts(rows)
    order = ranked(table, 3)
    found = fragility(table, 3, order)
    expected = [brute_force(table, 3, u, v) for u, v in itertools.pairwise(order)]
    assert found.swap_votes == [*expected, None]
    assert found.top_votes == min(
        k for k in [*expected[:1], brute_force(table, 3, order[0], order[2])] if k is not None
    )


@pytest.mark.parametrize("seed", range(4))
def test_on_random_small_boards_too(seed):
    rng = np.random.default_rng(seed)
    wins = rng.integers(0, 3, size=(3, 3))
    table = counts([(0, 1, *wins[0]), (0, 2, *wins[1]), (1, 2, *wins[2])])
    order = ranked(table, 3)
    found = fragility(table, 3, order)
    assert found.swap_votes[:-1] == [
        brute_force(table, 3, u, v) for u, v in itertools.pairwise(order)
    ]


def test_a_pair_only_one_sided_votes_separate_can_be_tied_but_never_swapped():
    table = counts([(0, 1, 5, 0, 0)])
    assert fragility(table, 2, [0, 1]).swap_votes == [None, None]


def test_a_wide_margin_takes_more_votes_than_a_narrow_one():
    narrow = fragility(counts([(0, 1, 55, 45, 30)]), 2, [0, 1]).swap_votes[0]
    wide = fragility(counts([(0, 1, 80, 20, 30)]), 2, [0, 1]).swap_votes[0]
    assert narrow is not None and wide is not None
    assert narrow < wide


def test_the_recompute_stores_it_and_the_board_and_exports_show_it(client, rated, settings):
    alpha, bravo, charlie = rated
    snapshot = recompute.ratings_recompute()
    rows = {row.model_id: row for row in snapshot.rows.all()}
    assert rows[alpha.pk].swap_with_id == bravo.pk
    assert rows[bravo.pk].swap_with_id == charlie.pk
    assert rows[charlie.pk].swap_with_id is None and rows[charlie.pk].swap_votes is None
    assert rows[alpha.pk].swap_votes >= 1 and rows[bravo.pk].swap_votes >= 1
    assert snapshot.params["top_spot_votes"] == rows[alpha.pk].swap_votes

    body = client.get("/leaderboard/").content.decode()
    assert "Order holds unless" in body
    top = snapshot.params["top_spot_votes"]
    assert f"The top spot holds unless {top} vote" in body
    assert re.search(rf"stays above Bravo unless {rows[alpha.pk].swap_votes} vote", body)

    data = client.get("/leaderboard.json").json()
    assert data["snapshot"]["top_spot_votes"] == top
    by_slug = {m["slug"]: m for m in data["models"]}
    assert by_slug["alpha"]["swap_votes"] == rows[alpha.pk].swap_votes
    assert by_slug["alpha"]["swap_with"] == "bravo"
    assert by_slug["charlie"]["swap_votes"] is None
    csv_text = client.get("/leaderboard.csv").content.decode()
    assert csv_text.splitlines()[0].endswith("swap_votes,swap_with")


def test_other_categories_leave_it_out_and_hide_the_column(client, rated, make_vote):
    alpha, bravo, _ = rated
    make_vote(alpha, bravo, "a", has_code=True)
    snapshots = {s.category: s for s in recompute.ratings_recompute_all()}
    assert snapshots["overall"].params["fragility"] is True
    assert "fragility" not in snapshots["code"].params
    assert not snapshots["code"].rows.filter(swap_votes__isnull=False).exists()
    body = client.get("/leaderboard/?category=code").content.decode()
    assert "Order holds unless" not in body


def test_a_refresh_carries_the_last_full_counts_figures_and_the_page_says_when(
    client, rated, make_vote, caplog
):
    """Rank fragility costs refits per pair: the live board's refresh does not compute it but
    shows the hourly full count's, and the next full count computes it again."""
    alpha, bravo, _ = rated
    full = refresh.ratings_refresh(force=True, interval=0).snapshots[0]
    assert full.category == "overall" and "fragility_carried" not in full.params
    swaps = dict(full.rows.values_list("model_id", "swap_votes"))

    make_vote(alpha, bravo, "a")
    caplog.clear()
    with caplog.at_level("INFO", logger="leaderboard.timing"):
        live = refresh.ratings_refresh(interval=0).snapshots[0]
    assert live.vote_count == 61
    assert "stage fragility" not in caplog.text
    assert live.params["fragility_carried"] is True
    assert live.params["fragility_at"] == full.params["fragility_at"]
    assert live.params["top_spot_votes"] == full.params["top_spot_votes"]
    assert dict(live.rows.values_list("model_id", "swap_votes")) == swaps
    assert dict(live.rows.values_list("model_id", "swap_with_id")) == dict(
        full.rows.values_list("model_id", "swap_with_id")
    )
    body = client.get("/leaderboard/").content.decode()
    assert "Computed by the hourly full count" in body
    data = client.get("/leaderboard.json").json()
    assert data["snapshot"]["fragility_computed_at"] == full.params["fragility_at"]

    caplog.clear()
    with caplog.at_level("INFO", logger="leaderboard.timing"):
        again = refresh.ratings_refresh(force=True, interval=0).snapshots[0]
    assert "stage fragility" in caplog.text  # same counts, but its figures were carried
    assert again.pk != live.pk and "fragility_carried" not in again.params
    assert "Computed by the hourly full count" not in client.get("/leaderboard/").content.decode()
