"""The pair sampling policies' invariants: ARENA_SAMPLING=weighted|active."""

import inspect
import random
from collections import Counter

import pytest

from battles import sampling, services
from battles.models import SamplingStanding
from battles.sampling import Candidate, Standing, active_pair_probabilities, pair_probabilities

WEIGHTS = {1: 1.0, 2: 1.0, 3: 1.0, 4: 2.0}
STANDINGS = {
    1: Standing(1200, 20),
    2: Standing(1190, 20),  # close to 1 and uncertain: the pair most worth a vote
    3: Standing(900, 20),
    4: Standing(700, 5),
}


def test_active_probabilities_cover_every_distinct_pair_once_and_sum_to_one():
    probs = active_pair_probabilities(WEIGHTS, STANDINGS, exploration=0.25)
    assert set(probs) == set(pair_probabilities(WEIGHTS))
    assert all(i < j for i, j in probs)
    assert sum(probs.values()) == pytest.approx(1.0)


@pytest.mark.parametrize("exploration", [0.05, 0.25, 1.0])
def test_every_pair_keeps_its_exploration_floor(exploration):
    weighted = pair_probabilities(WEIGHTS)
    probs = active_pair_probabilities(WEIGHTS, STANDINGS, exploration=exploration)
    for pair, probability in probs.items():
        assert probability >= exploration * weighted[pair] - 1e-12
    if exploration == 1.0:
        assert probs == pytest.approx(weighted)


def test_votes_go_to_the_close_uncertain_pair_rather_than_a_settled_one():
    probs = active_pair_probabilities(WEIGHTS, STANDINGS, exploration=0.25)
    weighted = pair_probabilities(WEIGHTS)
    assert probs[(1, 2)] > weighted[(1, 2)]
    assert probs[(1, 2)] > 5 * probs[(1, 4)]
    # 3 and 4 are neighbours too, but 200 points apart with small errors: their order is
    # settled, so they get no more than the exploration share.
    assert probs[(3, 4)] == pytest.approx(0.25 * weighted[(3, 4)], rel=0.05)


EVEN = {i: Standing(1000 + 40 * i, 15) for i in range(8)}  # neighbours ~1.9 errors apart


def test_votes_go_to_neighbours_on_the_board_and_fall_off_with_the_distance_in_rank():
    weights = dict.fromkeys(EVEN, 1.0)
    probs = active_pair_probabilities(weights, EVEN, exploration=0.25)
    weighted = pair_probabilities(weights)
    by_distance = {
        d: [probs[(i, i + d)] / weighted[(i, i + d)] for i in range(8 - d)] for d in range(1, 8)
    }
    assert min(by_distance[1]) > 2  # every adjacent pair gets more than twice its weighted odds
    assert max(by_distance[4]) < 0.5
    means = [sum(v) / len(v) for v in by_distance.values()]
    assert means == sorted(means, reverse=True)


def test_catalog_weights_scale_the_active_design():
    weights = dict.fromkeys(EVEN, 1.0)
    heavier = {**weights, 3: 2.0}
    plain = active_pair_probabilities(weights, EVEN, exploration=0.25)
    boosted = active_pair_probabilities(heavier, EVEN, exploration=0.25)
    assert sampling.model_shares(heavier, boosted)[3] > sampling.model_shares(weights, plain)[3]


def test_the_active_probabilities_are_a_function_of_the_standings_alone():
    weights = dict.fromkeys(EVEN, 1.0)
    first = active_pair_probabilities(weights, EVEN, exploration=0.25)
    sampling._design.cache_clear()
    shuffled = dict(reversed(list(EVEN.items())))
    assert (
        active_pair_probabilities(dict(reversed(list(weights.items()))), shuffled, exploration=0.25)
        == first
    )


@pytest.mark.parametrize("seed", range(5))
def test_on_a_random_board_every_pair_and_model_keeps_its_floor(seed):
    rng = random.Random(seed)
    weights = {i: rng.choice([0.5, 1.0, 2.0]) for i in range(30)}
    standings = {
        i: Standing(rng.gauss(1000, 150), rng.uniform(3, 60))
        for i in range(30)
        if rng.random() < 0.9
    }
    probs = active_pair_probabilities(weights, standings, exploration=0.1)
    weighted = pair_probabilities(weights)
    assert set(probs) == set(weighted)
    assert sum(probs.values()) == pytest.approx(1.0)
    for pair, probability in probs.items():
        assert probability >= 0.1 * weighted[pair] - 1e-12
    shares = sampling.model_shares(weights, probs)
    weighted_shares = sampling.model_shares(weights, weighted)
    assert sum(shares.values()) == pytest.approx(2.0)
    assert all(shares[i] >= 0.1 * weighted_shares[i] - 1e-12 for i in weights)


def test_a_model_whose_order_is_settled_leaves_the_design_defined():
    # No neighbour contrast needs Charlie: the design would starve its pairs to nothing.
    weights = dict.fromkeys((1, 2, 3), 1.0)
    standings = {1: Standing(1100, 10), 2: Standing(1095, 10), 3: Standing(800, 10)}
    probs = active_pair_probabilities(weights, standings, exploration=0.25)
    assert sum(probs.values()) == pytest.approx(1.0)
    assert probs[(1, 2)] == max(probs.values())
    assert probs[(1, 3)] >= 0.25 / 3 - 1e-12


def test_settled_standings_fall_back_to_every_pair_alike_inside_the_design():
    weights = dict.fromkeys(range(4), 1.0)
    settled = {i: Standing(1000 + 300 * i, 0.0) for i in range(4)}
    probs = active_pair_probabilities(weights, settled, exploration=0.25)
    assert probs == pytest.approx(pair_probabilities(weights))


def test_a_model_without_a_rating_is_treated_as_least_certain_and_drawn_often():
    probs = active_pair_probabilities({**WEIGHTS, 5: 1.0}, STANDINGS, exploration=0.25)
    shares = sampling.model_shares({**WEIGHTS, 5: 1.0}, probs)
    assert shares[5] == max(shares.values())


def test_without_ratings_the_active_policy_is_the_weighted_one():
    assert active_pair_probabilities(WEIGHTS, {}, exploration=0.25) == pair_probabilities(WEIGHTS)


def test_a_drawn_pair_is_never_one_model_twice_and_sides_are_a_coin_flip():
    candidates = [Candidate(id=i, weight=w, votes=100) for i, w in WEIGHTS.items()]
    rng = random.Random(7)
    probs = active_pair_probabilities(WEIGHTS, STANDINGS, exploration=0.25)
    sides = Counter()
    for _ in range(4000):
        draw = sampling.draw_pair(
            candidates, boost=2.0, boost_below=50, rng=rng, standings=STANDINGS, exploration=0.25
        )
        assert draw.model_a != draw.model_b
        pair = (min(draw.model_a, draw.model_b), max(draw.model_a, draw.model_b))
        assert draw.probability == pytest.approx(probs[pair] / 2)
        sides[draw.model_a < draw.model_b] += 1
    assert 1800 < sides[True] < 2200


def test_the_draw_reads_nothing_about_the_visitor_or_the_prompt():
    assert list(inspect.signature(services._draw).parameters) == ["rng"]
    assert "visitor" not in inspect.getsource(services._draw)
    assert "prompt" not in inspect.getsource(services._draw)
    # The maths sees only the catalog, the vote counts and the last ratings (and the design
    # the recompute computed from those ratings).
    assert list(inspect.signature(active_pair_probabilities).parameters) == [
        "weights",
        "standings",
        "exploration",
        "design",
    ]
    assert list(inspect.signature(sampling.draw_pair).parameters) == [
        "candidates",
        "boost",
        "boost_below",
        "rng",
        "standings",
        "exploration",
        "design",
    ]


@pytest.fixture
def three(make_model):
    return [make_model(name) for name in ("Alpha", "Bravo", "Charlie")]


def test_active_without_any_ratings_still_starts_battles_with_the_weighted_odds(three, settings):
    settings.ARENA_SAMPLING = "active"
    draw = services._draw(random.Random(1))
    assert draw.model_a != draw.model_b
    assert draw.probability == pytest.approx(1 / 6)  # three equal models: a pair, then a side


def test_active_samples_from_the_stored_standings_and_records_that_probability(three, settings):
    settings.ARENA_SAMPLING = "active"
    alpha, bravo, charlie = three
    services.sampling_standings_replace(
        standings={alpha.pk: (1100, 10), bravo.pk: (1095, 10), charlie.pk: (800, 10)}
    )
    assert SamplingStanding.objects.count() == 3
    weights = dict.fromkeys((alpha.pk, bravo.pk, charlie.pk), 2.0)  # all new: boosted alike
    standings = services.sampling_standings(list(weights))
    expected = active_pair_probabilities(
        weights, standings, exploration=settings.ARENA_SAMPLING_EXPLORATION
    )
    seen = Counter()
    rng = random.Random(3)
    for _ in range(300):
        draw = services._draw(rng)
        pair = (min(draw.model_a, draw.model_b), max(draw.model_a, draw.model_b))
        assert draw.probability == pytest.approx(expected[pair] / 2)
        seen[pair] += 1
    close = (min(alpha.pk, bravo.pk), max(alpha.pk, bravo.pk))
    assert seen[close] == max(seen.values())
    assert len(seen) == 3  # exploration: every pair still drawn


def test_the_recompute_stores_the_design_and_battle_starts_only_weigh_it(
    three, settings, make_model
):
    settings.ARENA_SAMPLING = "active"
    alpha, bravo, charlie = three
    standings = {alpha.pk: (1100, 10), bravo.pk: (1095, 10), charlie.pk: (800, 10)}
    services.sampling_standings_replace(standings=standings)
    stored = services.sampling_design()
    assert stored.ids == tuple(sorted(standings))
    rated = {pk: Standing(r, se) for pk, (r, se) in standings.items()}
    assert stored.shares == pytest.approx(sampling.design_for(standings, rated).shares)
    # A model added since the recompute: the stored design does not cover it, so the draw
    # computes one that does (the newcomer as the least certain) rather than leave it out.
    delta = make_model("Delta")
    seen = Counter()
    rng = random.Random(5)
    for _ in range(200):
        draw = services._draw(rng)
        seen.update((draw.model_a, draw.model_b))
    assert seen[delta.pk] > 0
    # The next recompute covers it.
    services.sampling_standings_replace(standings=standings)
    assert delta.pk in services.sampling_design().ids


def test_the_weighted_policy_stores_no_design(three, settings):
    settings.ARENA_SAMPLING = "weighted"
    alpha, bravo, charlie = three
    services.sampling_standings_replace(
        standings={alpha.pk: (1100, 10), bravo.pk: (1095, 10), charlie.pk: (800, 10)}
    )
    assert services.sampling_design() is None


def test_the_weighted_policy_ignores_the_standings(three, settings):
    settings.ARENA_SAMPLING = "weighted"
    alpha, bravo, charlie = three
    services.sampling_standings_replace(
        standings={alpha.pk: (1100, 10), bravo.pk: (1095, 10), charlie.pk: (800, 10)}
    )
    assert services._draw(random.Random(2)).probability == pytest.approx(1 / 6)
