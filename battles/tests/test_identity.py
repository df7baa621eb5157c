"""The identity-leak detector on its labelled corpus (battles/tests/identity_corpus.py)."""

import pytest

from battles.identity import identity_terms, leaked_terms
from battles.tests.identity_corpus import (
    HONEST,
    LEAKS,
    MODELS,
    old_identity_terms,
    old_leaked_terms,
    scores,
)
from llm_providers.testing.server import generate_text


def flags(text: str, key: str) -> bool:
    return bool(leaked_terms(text, identity_terms(**MODELS[key])))


def old_flags(text: str, key: str) -> bool:
    return bool(old_leaked_terms(text, old_identity_terms(**MODELS[key])))


@pytest.mark.parametrize(("key", "text"), LEAKS)
def test_a_reply_that_names_itself_is_a_leak(key, text):
    assert flags(text, key)


@pytest.mark.parametrize(("key", "text"), HONEST)
def test_an_ordinary_answer_that_mentions_the_same_words_is_not(key, text):
    assert not flags(text, key)


def test_on_the_whole_corpus_recall_stays_complete_and_precision_rises():
    cases = LEAKS + HONEST
    truth = [True] * len(LEAKS) + [False] * len(HONEST)
    old_precision, old_recall = scores([old_flags(t, k) for k, t in cases], truth)
    precision, recall = scores([flags(t, k) for k, t in cases], truth)
    print(f"old: precision {old_precision:.2f} recall {old_recall:.2f}")
    print(f"new: precision {precision:.2f} recall {recall:.2f}")
    assert old_recall == recall == 1.0
    assert old_precision < 0.6 < 0.95 <= precision


def test_the_test_servers_ordinary_replies_are_no_longer_flagged_for_test_model():
    """What load testing showed: four test models, ~15% of their replies flagged by "test"."""
    flagged_old = flagged_new = 0
    for name in ("alpha", "beta", "gamma", "test-model"):
        entry = {"name": name, "slug": name, "upstream": name, "organization": "Example Labs"}
        for i in range(100):
            text = generate_text(name, f"question {i}" + (" in python code" if i % 3 else ""), None)
            flagged_old += bool(old_leaked_terms(text, old_identity_terms(**entry)))
            flagged_new += bool(leaked_terms(text, identity_terms(**entry)))
    assert flagged_old > 20  # the old rule: any "test" in the reply
    assert flagged_new == 0


def test_the_test_servers_leak_fault_is_still_caught():
    for name in ("alpha", "test-model", "Bravo"):
        entry = {
            "name": name,
            "slug": name.lower(),
            "upstream": name.lower(),
            "organization": "Bravo",
        }
        text = f"I am {name.lower()}, made by Bravo. " + generate_text(name.lower(), "hi", 30)
        assert leaked_terms(text, identity_terms(**entry))


def test_the_exact_public_name_counts_anywhere_but_only_as_written():
    command = identity_terms(**MODELS["command"])
    assert leaked_terms("Thanks for asking Command R.", command)
    test_model = identity_terms(**MODELS["test"])
    assert leaked_terms("Replies from test-model are short.", test_model)
    assert not leaked_terms("Evaluate the test model on held-out data.", test_model)
