"""models.yaml import and export: the original llmbattler format plus our fields."""

import io
import textwrap

import pytest
from django.core.management import CommandError, call_command

from llm_providers.models import LLMModel
from llm_providers.services import CatalogFileError, catalog_dump_yaml, catalog_load_yaml

GOOD = textwrap.dedent(
    """\
    models:
      - id: llama-3-1-8b
        name: Llama 3.1 8B
        model: llama3.1:8b
        base_url: http://ollama:11434/v1
        api_key_env: null
        organization: Meta
        license: open-source
        status: active

      - id: gpt-4o-mini
        name: GPT-4o Mini
        model: gpt-4o-mini
        base_url: https://api.openai.com/v1
        api_key_env: OPENAI_API_KEY
        organization: OpenAI
        license: proprietary
        status: inactive
        temperature: 0.3
        max_tokens: 512
        weight: 2
        system_prompt: Be helpful.
    """
)


def errors_of(text: str) -> list[str]:
    with pytest.raises(CatalogFileError) as info:
        catalog_load_yaml(text=text)
    return info.value.errors


@pytest.mark.django_db
def test_it_imports_the_original_llmbattler_format_with_our_extra_fields():
    report = catalog_load_yaml(text=GOOD)
    assert report.created == ["llama-3-1-8b", "gpt-4o-mini"]
    gpt = LLMModel.objects.get(slug="gpt-4o-mini")
    assert (gpt.name, gpt.api_key_env, gpt.temperature, gpt.max_tokens, gpt.weight) == (
        "GPT-4o Mini",
        "OPENAI_API_KEY",
        0.3,
        512,
        2.0,
    )
    assert gpt.status == "inactive"
    llama = LLMModel.objects.get(slug="llama-3-1-8b")
    assert llama.api_key_env == "" and llama.status == "active"


@pytest.mark.django_db
def test_it_updates_existing_models_and_reports_unchanged_ones():
    catalog_load_yaml(text=GOOD)
    report = catalog_load_yaml(text=GOOD.replace("temperature: 0.3", "temperature: 0.9"))
    assert report.updated == ["gpt-4o-mini"]
    assert report.unchanged == ["llama-3-1-8b"]
    assert LLMModel.objects.get(slug="gpt-4o-mini").temperature == 0.9


@pytest.mark.django_db
def test_dump_then_load_round_trips_the_catalog():
    catalog_load_yaml(text=GOOD)
    dumped = catalog_dump_yaml()
    LLMModel.objects.all().delete()
    catalog_load_yaml(text=dumped)
    assert catalog_dump_yaml() == dumped
    assert LLMModel.objects.count() == 2


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("replace", "by", "expected"),
    [
        (
            "temperature: 0.3",
            "temperature: hot",
            "line 19: models[1].temperature: must be a number",
        ),
        (
            "max_tokens: 512",
            "max_tokens: 1.5",
            "line 20: models[1].max_tokens: must be a whole number",
        ),
        ("weight: 2", "colour: blue", "line 21: models[1]: unknown field 'colour'"),
        (
            "status: inactive",
            "status: maybe",
            "models[1].status: Value 'maybe' is not a valid choice",
        ),
        ("base_url: http://ollama:11434/v1", "base_url: ftp://x", "line 5: models[0].base_url"),
        (
            "api_key_env: OPENAI_API_KEY",
            "api_key_env: sk-abc def",
            "models[1].api_key_env: Give the NAME",
        ),
        (
            "temperature: 0.3",
            "temperature: 7",
            "models[1].temperature: Ensure this value is less than",
        ),
        (
            "  - id: gpt-4o-mini",
            "  - id: llama-3-1-8b",
            "line 11: models[1]: duplicate id 'llama-3-1-8b' (first at line 2)",
        ),
        ("    name: GPT-4o Mini\n", "", "line 11: models[1]: 'name' is required"),
        (
            "    organization: Meta\n",
            "    organization: Meta\n    organization: Meta2\n",
            "line 8: models[0]: 'organization' appears twice",
        ),
        (
            "temperature: 0.3",
            "temperature: true",
            "models[1].temperature: must be a number, got True",
        ),
    ],
)
def test_it_rejects_a_bad_file_with_the_line_and_field_and_imports_nothing(replace, by, expected):
    assert replace in GOOD
    errors = errors_of(GOOD.replace(replace, by))
    assert any(expected in e for e in errors), errors
    assert LLMModel.objects.count() == 0


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("models: [\n", "not valid YAML"),
        ("- just a list item: 1\n  bad indent\n", "not valid YAML"),
        ("models: 3\n", "top-level 'models:' list"),
        ("", "top-level 'models:' list"),
        ("models: []\nextra: 1\n", "unknown top-level keys: extra"),
        ("models:\n  - 42\n", "line 2: models[0]: each model must be a mapping"),
    ],
)
def test_it_explains_structurally_broken_files(text, expected):
    errors = errors_of(text)
    assert any(expected in e for e in errors), errors


@pytest.mark.django_db
def test_load_models_command_reports_every_error_and_changes_nothing(tmp_path):
    path = tmp_path / "models.yaml"
    path.write_text(
        GOOD.replace("temperature: 0.3", "temperature: hot").replace("weight: 2", "x: 1")
    )
    with pytest.raises(CommandError) as info:
        call_command("load_models", str(path))
    message = str(info.value)
    assert "nothing was imported" in message
    assert "temperature: must be a number" in message and "unknown field 'x'" in message
    assert LLMModel.objects.count() == 0


@pytest.mark.django_db
def test_load_models_command_dry_run_writes_nothing(tmp_path):
    path = tmp_path / "models.yaml"
    path.write_text(GOOD)
    out = io.StringIO()
    call_command("load_models", str(path), "--dry-run", stdout=out)
    assert "2 would be created" in out.getvalue()
    assert LLMModel.objects.count() == 0


@pytest.mark.django_db
def test_load_models_command_names_a_missing_file():
    with pytest.raises(CommandError, match="no such file"):
        call_command("load_models", "/nonexistent/models.yaml")


@pytest.mark.django_db
def test_dump_models_command_writes_yaml_without_any_key(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-value-123")
    catalog_load_yaml(text=GOOD)
    out = io.StringIO()
    call_command("dump_models", stdout=out)
    assert "api_key_env: OPENAI_API_KEY" in out.getvalue()
    assert "sk-secret-value-123" not in out.getvalue()


@pytest.mark.django_db
def test_the_shipped_example_catalogs_are_valid():
    from django.conf import settings

    for name in ("models.yaml", "local-models.yaml"):
        text = (settings.BASE_DIR / "config" / name).read_text()
        report = catalog_load_yaml(text=text, dry_run=True)
        assert len(report.created) >= 4, name
    from llm_providers.services import catalog_parse_yaml

    example = catalog_parse_yaml(text=(settings.BASE_DIR / "config" / "models.yaml").read_text())
    assert {entry["status"] for entry in example} == {"inactive"}


SAMPLING = GOOD + textwrap.indent(
    textwrap.dedent(
        """\
        stop: ["\\nQuestion:", "\\nAnswer:"]
        extra_body:
          repeat_penalty: 1.2
          top_k: 40
        """
    ),
    "    ",
)


@pytest.mark.django_db
def test_it_imports_stop_strings_and_extra_request_fields_and_dumps_them_back():
    catalog_load_yaml(text=SAMPLING)
    gpt = LLMModel.objects.get(slug="gpt-4o-mini")
    assert gpt.stop == ["\nQuestion:", "\nAnswer:"]
    assert gpt.extra_body == {"repeat_penalty": 1.2, "top_k": 40}
    endpoint = gpt.endpoint()
    assert endpoint.stop == ("\nQuestion:", "\nAnswer:")
    assert endpoint.extra_body == {"repeat_penalty": 1.2, "top_k": 40}
    llama = LLMModel.objects.get(slug="llama-3-1-8b")
    assert (llama.stop, llama.extra_body) == ([], {})
    dumped = catalog_dump_yaml()
    assert "repeat_penalty: 1.2" in dumped and "extra_body: {}" not in dumped
    LLMModel.objects.all().delete()
    catalog_load_yaml(text=dumped)
    assert catalog_dump_yaml() == dumped


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("replace", "by", "expected"),
    [
        ('stop: ["\\nQuestion:", "\\nAnswer:"]', "stop: Question", "must be a list of strings"),
        (
            'stop: ["\\nQuestion:", "\\nAnswer:"]',
            'stop: ["a", "b", "c", "d", "e"]',
            "models[1].stop: At most 4 stop strings",
        ),
        ('stop: ["\\nQuestion:", "\\nAnswer:"]', 'stop: ["a", 3]', "non-empty strings"),
        ("top_k: 40", "temperature: 2", "temperature: set by the arena"),
        (
            "extra_body:\n      repeat_penalty: 1.2\n      top_k: 40",
            "extra_body: [1, 2]",
            "models[1].extra_body: must be a mapping",
        ),
    ],
)
def test_it_rejects_bad_stop_strings_and_extra_fields(replace, by, expected):
    assert replace in SAMPLING
    errors = errors_of(SAMPLING.replace(replace, by))
    assert any(expected in e for e in errors), errors
    assert LLMModel.objects.count() == 0
