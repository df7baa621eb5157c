"""Agreement with independent Bradley-Terry solvers: choix, evalica and LMArena's arena-rank."""

import math

import numpy as np
import pytest

from leaderboard.engine import fit
from leaderboard.tests.test_engine import aggregate, simulate

ELO = 400 / math.log(10)
N_MODELS = 6


@pytest.fixture(scope="module")
def battles():
    rng = np.random.default_rng(21)
    return simulate(np.linspace(-1.0, 1.0, N_MODELS), 1500, rng)


@pytest.fixture(scope="module")
def ours(battles):
    return fit(aggregate(*battles, N_MODELS), N_MODELS)


def centred(ratings):
    return ratings - ratings.mean()


def test_it_matches_choix_on_small_data(battles, ours):
    choix = pytest.importorskip("choix")
    a, b, outcome = battles
    # choix takes (winner, loser) pairs: count each vote twice so a tie is one win each way.
    data = []
    for x, y, o in zip(a.tolist(), b.tolist(), outcome.tolist(), strict=True):
        data += [(x, y), (x, y)] if o == 0 else [(y, x), (y, x)] if o == 1 else [(x, y), (y, x)]
    params = choix.opt_pairwise(N_MODELS, data, alpha=1e-12, tol=1e-12)
    # choix's objective is for doubled data, so its optimum is the same MLE.
    np.testing.assert_allclose(centred(ours.ratings), centred(ELO * params), atol=0.5)


def test_it_matches_evalica_on_small_data(battles, ours):
    evalica = pytest.importorskip("evalica")
    pd = pytest.importorskip("pandas")
    a, b, outcome = battles
    winners = [
        evalica.Winner.X if o == 0 else evalica.Winner.Y if o == 1 else evalica.Winner.Draw
        for o in outcome.tolist()
    ]
    result = evalica.bradley_terry(
        a.tolist(),
        b.tolist(),
        winners,
        index=pd.Index(range(N_MODELS)),
        tie_weight=0.5,
        tolerance=1e-12,
        limit=100_000,
    )
    scores = result.scores.sort_index().to_numpy()
    np.testing.assert_allclose(centred(ours.ratings), centred(ELO * np.log(scores)), atol=0.5)


def test_it_matches_arena_rank_ratings_and_sandwich_intervals(battles, ours):
    pytest.importorskip("arena_rank")
    pd = pytest.importorskip("pandas")
    from arena_rank.models.bradley_terry import BradleyTerry
    from arena_rank.utils.data_utils import PairDataset

    a, b, outcome = battles
    names = np.array([f"m{i}" for i in range(N_MODELS)])
    winner = np.array(["model_a", "model_b", "tie", "both_bad"])[outcome]
    frame = pd.DataFrame({"model_a": names[a], "model_b": names[b], "winner": winner})
    dataset = PairDataset.from_pandas(frame)
    theirs = BradleyTerry(n_competitors=len(dataset.competitors)).compute_ratings_and_cis(
        dataset, significance_level=0.05
    )
    order = [dataset.competitors.index(name) for name in names]
    np.testing.assert_allclose(
        centred(ours.ratings), centred(np.asarray(theirs["ratings"])[order]), atol=0.5
    )
    width = np.asarray(theirs["rating_upper"] - theirs["rating_lower"])[order]
    np.testing.assert_allclose(ours.upper - ours.lower, width, atol=0.5)
