"""Staff manage the catalog in Django admin; keys never show."""

import pytest

from llm_providers.models import LLMModel

CHANGELIST = "/admin/llm_providers/llmmodel/"


@pytest.fixture
def catalog(make_model):
    return [
        make_model("Alpha", organization="Acme", knobs="tokens=3"),
        make_model("Bravo", organization="Bmax", status="inactive", knobs="tokens=3"),
        make_model("Broken", organization="Acme", knobs="fault=401"),
    ]


def test_staff_see_the_catalog_with_filters_and_search(
    staff, catalog, django_assert_max_num_queries
):
    with django_assert_max_num_queries(12):
        response = staff.get(CHANGELIST)
    html = response.content.decode()
    assert response.status_code == 200
    assert all(m.name in html for m in catalog)
    assert "By status" in html and "By organization" in html
    found = staff.get(CHANGELIST, {"q": "bravo"}).content.decode()
    assert "Bravo" in found and "Broken" not in found
    filtered = staff.get(CHANGELIST, {"status__exact": "inactive"}).content.decode()
    assert "Bravo" in filtered and "Alpha</a>" not in filtered


def test_visitors_cannot_reach_admin(client, catalog):
    response = client.get(CHANGELIST)
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_the_change_page_shows_whether_the_key_is_set_but_never_the_key(
    staff, make_model, monkeypatch
):
    monkeypatch.setenv("ARENA_TEST_KEY", "sk-very-secret-123")
    model = make_model("Keyed", api_key_env="ARENA_TEST_KEY")
    html = staff.get(f"{CHANGELIST}{model.pk}/change/").content.decode()
    assert "ARENA_TEST_KEY" in html and "set" in html
    assert "sk-very-secret-123" not in html
    monkeypatch.delenv("ARENA_TEST_KEY")
    html = staff.get(f"{CHANGELIST}{model.pk}/change/").content.decode()
    assert "missing: $ARENA_TEST_KEY is not set" in html


def test_staff_can_edit_a_model_and_bad_values_are_explained(staff, catalog):
    model = catalog[0]
    data = {
        "name": model.name,
        "slug": model.slug,
        "organization": "Acme",
        "license": "MIT",
        "status": "active",
        "weight": "3",
        "base_url": model.base_url,
        "model": model.model,
        "api_key_env": "",
        "temperature": "0.5",
        "top_p": "",
        "max_tokens": "64",
        "system_prompt": "Be kind.",
        "url": "example.com/model-card",
        "notes": "",
    }
    response = staff.post(f"{CHANGELIST}{model.pk}/change/", data)
    assert response.status_code == 302
    model.refresh_from_db()
    assert (model.license, model.weight, model.temperature, model.max_tokens) == (
        "MIT",
        3.0,
        0.5,
        64,
    )
    assert model.url == "https://example.com/model-card"  # a link without a scheme
    bad = staff.post(
        f"{CHANGELIST}{model.pk}/change/",
        data | {"api_key_env": "sk-abc 123", "temperature": "9", "base_url": "ftp://x"},
    )
    html = bad.content.decode()
    assert bad.status_code == 200
    assert "Give the NAME of an environment variable" in html
    assert "less than or equal to 2.0" in html
    assert "valid http(s) URL" in html


def test_staff_set_stop_strings_and_extra_request_fields_as_json(staff, catalog):
    model = catalog[0]
    data = {
        "name": model.name,
        "slug": model.slug,
        "status": "active",
        "weight": "1",
        "base_url": model.base_url,
        "model": model.model,
        "stop": '["\\nQuestion:"]',
        "extra_body": '{"repeat_penalty": 1.2}',
    }
    assert staff.post(f"{CHANGELIST}{model.pk}/change/", data).status_code == 302
    model.refresh_from_db()
    assert (model.stop, model.extra_body) == (["\nQuestion:"], {"repeat_penalty": 1.2})

    bad = staff.post(
        f"{CHANGELIST}{model.pk}/change/",
        data | {"stop": '"Question"', "extra_body": '{"max_tokens": 5}'},
    )
    html = bad.content.decode()
    assert bad.status_code == 200
    assert "Give a list of non-empty strings" in html
    assert "max_tokens: set by the arena from this model" in html

    cleared = staff.post(f"{CHANGELIST}{model.pk}/change/", data | {"stop": "", "extra_body": ""})
    assert cleared.status_code == 302
    model.refresh_from_db()
    assert (model.stop, model.extra_body) == ([], {})


def test_bulk_activate_and_deactivate(staff, catalog):
    ids = [str(m.pk) for m in catalog]
    staff.post(CHANGELIST, {"action": "deactivate", "_selected_action": ids})
    assert set(LLMModel.objects.values_list("status", flat=True)) == {"inactive"}
    staff.post(CHANGELIST, {"action": "activate", "_selected_action": ids[:2]})
    assert LLMModel.objects.filter(status="active").count() == 2


def test_test_connection_reports_latency_or_the_error_in_plain_words(staff, catalog):
    response = staff.post(
        CHANGELIST,
        {"action": "test_connection", "_selected_action": [catalog[0].pk, catalog[2].pk]},
        follow=True,
    )
    messages = [str(m) for m in response.context["messages"]]
    assert any(m.startswith("Alpha: OK in ") and m.endswith(" ms.") for m in messages), messages
    broken = next(m for m in messages if m.startswith("Broken: "))
    assert "API key" in broken
    assert "Traceback" not in broken
