"""Precision and recall of the identity-leak detector on its labelled corpus, old rule and new.

make bench-identity
"""

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


def main() -> None:
    cases = LEAKS + HONEST
    truth = [True] * len(LEAKS) + [False] * len(HONEST)
    old = [bool(old_leaked_terms(t, old_identity_terms(**MODELS[k]))) for k, t in cases]
    new = [bool(leaked_terms(t, identity_terms(**MODELS[k]))) for k, t in cases]
    print(f"corpus: {len(LEAKS)} self-identifications, {len(HONEST)} ordinary answers")
    print(f"{'rule':<28}{'precision':>10}{'recall':>8}{'false flags':>13}")
    for label, flagged in (("old (any occurrence)", old), ("new (self-naming patterns)", new)):
        precision, recall = scores(flagged, truth)
        false = sum(f and not t for f, t in zip(flagged, truth, strict=True))
        print(f"{label:<28}{precision:>10.2f}{recall:>8.2f}{false:>13}")
    # The load test's set-up: four test models, the test server's ordinary replies.
    total = old_hits = new_hits = 0
    for name in ("alpha", "beta", "gamma", "test-model"):
        entry = {"name": name, "slug": name, "upstream": name, "organization": "Example Labs"}
        for i in range(500):
            text = generate_text(name, f"question {i}" + (" in python code" if i % 3 else ""), None)
            total += 1
            old_hits += bool(old_leaked_terms(text, old_identity_terms(**entry)))
            new_hits += bool(leaked_terms(text, identity_terms(**entry)))
    print(
        f"test server replies of alpha/beta/gamma/test-model: {total}; flagged "
        f"old {old_hits} ({old_hits / total:.1%}), new {new_hits} ({new_hits / total:.1%})"
    )


if __name__ == "__main__":
    main()
