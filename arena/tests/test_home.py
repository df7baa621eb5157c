"""The home page: the prompt form and which models are in the arena."""

import pytest

from llm_providers.models import LLMModel

BUNDLED_NOTE = "tiny local models the arena comes with"


@pytest.fixture
def bundled(db):
    """The embedded default's catalog entries, as `make run` imports them."""
    return [
        LLMModel.objects.create(
            slug=f"smollm2-{n}",
            name=f"SmolLM2 135M {n}",
            base_url=f"http://127.0.0.1:{port}/v1",
            model="smollm2-135m-instruct",
            status="active",
        )
        for n, port in (("precise", 8089), ("creative", 8090))
    ] + [
        LLMModel.objects.create(
            slug="gemma3-270m-base",
            name="Gemma 3 270M (base)",
            base_url="http://127.0.0.1:8092/v1",
            model="gemma-3-270m",
            status="active",
        )
    ]


def test_it_says_plainly_that_the_bundled_models_are_tiny_local_ones(client, bundled):
    html = client.get("/").content.decode()
    assert "3 active models" in html and "Gemma 3 270M (base), SmolLM2 135M creative" in html
    assert BUNDLED_NOTE in html and "staff can add real ones" in html


def test_staff_are_told_where_to_add_real_models(staff, bundled):
    html = staff.get("/").content.decode()
    assert BUNDLED_NOTE in html
    assert 'href="/admin/llm_providers/llmmodel/"' in html and "load_models" in html


def test_the_note_goes_once_a_real_model_is_active(client, bundled, make_model):
    make_model("Real One")
    assert BUNDLED_NOTE not in client.get("/").content.decode()


def test_the_note_is_not_shown_for_a_local_server_of_the_users_own(client, make_model):
    # An Ollama on localhost is the visitor's real model, not the bundled ones.
    make_model("Llama", base_url="http://localhost:11434/v1", model="llama3.1:8b")
    assert BUNDLED_NOTE not in client.get("/").content.decode()
