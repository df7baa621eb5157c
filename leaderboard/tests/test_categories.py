import pytest

from battles.features import prompt_language
from leaderboard.categories import category_label, is_valid_category


def test_categories_accept_the_fixed_ones_and_iso_languages():
    assert all(map(is_valid_category, ["overall", "multi_turn", "long_prompt", "code", "lang:de"]))
    assert not any(map(is_valid_category, ["cooking", "lang:", "lang:German", "lang:x; drop"]))
    assert category_label("lang:de") == "Language: de"


def test_prompt_language_names_the_language_of_a_real_sentence():
    pytest.importorskip("py3langid")
    assert prompt_language("Bonjour, pouvez-vous m'expliquer la relativité ?") == "fr"
    assert prompt_language("Explain the theory of relativity in simple terms") == "en"


def test_prompt_language_is_blank_for_text_too_short_to_tell():
    assert prompt_language("ok") == ""
    assert prompt_language("x = 1 + 2") == ""
