"""models.yaml files made of random good and broken entries: all imported, or none and why.

Each entry is written out by hand, so the test knows the lines it spans and which entries are
wrong; the loader must name a line inside every wrong entry and import nothing, or import
every entry when none is wrong.
"""

import json
import re

import pytest
from django.db import transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llm_providers.models import LLMModel
from llm_providers.services import CatalogFileError, catalog_load_yaml

LINE = re.compile(r"^line (\d+): \S")
# One way to break an entry, and the field it touches.
BREAKS = [
    ("unknown field", lambda e: e | {"colour": "red"}),
    ("text that is a number", lambda e: e | {"name": 123}),
    ("number that is text", lambda e: e | {"temperature": "hot"}),
    ("fraction of a token", lambda e: e | {"max_tokens": 1.5}),
    ("boolean weight", lambda e: e | {"weight": True}),
    ("temperature out of range", lambda e: e | {"temperature": 5}),
    ("no base URL", lambda e: {k: v for k, v in e.items() if k != "base_url"}),
    ("no name", lambda e: {k: v for k, v in e.items() if k != "name"}),
    ("not a URL", lambda e: e | {"base_url": "ollama:11434"}),
    ("unknown status", lambda e: e | {"status": "sometimes"}),
    ("a NUL character in text", lambda e: e | {"organization": "Acme\x00"}),
    ("a list, not a mapping", lambda e: ["id", e["id"]]),
]

# Printable text (YAML forbids control characters in a file, and folds line separators).
texts = st.text(
    st.characters(codec="utf-8", exclude_categories=["Cs", "Cc", "Cn", "Zl", "Zp"]),
    max_size=30,
)
# Two decimals: PyYAML (YAML 1.1) reads "1e-05" as text, so keep numbers in plain notation.
fractions = st.integers(0, 100).map(lambda n: n / 100)
entries = st.fixed_dictionaries(
    {"model": st.text("abcdefghijklmnopqrstuvwxyz0123456789.:-/", min_size=1, max_size=20)},
    optional={
        "organization": texts,
        "license": texts,
        "temperature": fractions.map(lambda x: x * 2),
        "top_p": fractions,
        "max_tokens": st.integers(1, 100_000),
        "weight": fractions.map(lambda x: x * 1000),
        "status": st.sampled_from(["active", "inactive", "retired"]),
        "system_prompt": texts,
        "api_key_env": st.none() | st.from_regex(r"[A-Z][A-Z0-9_]{0,20}", fullmatch=True),
    },
)
# (entry, how it is broken or None, and whether it reuses the previous entry's id or name)
plans = st.lists(
    st.tuples(
        entries,
        st.none() | st.sampled_from(range(len(BREAKS))),
        st.sampled_from([None, None, None, None, "id", "name"]),
        texts,
    ),
    min_size=1,
    max_size=6,
)


def render(plan) -> tuple[str, list[tuple[int, int]], list[bool]]:
    """The YAML text, each entry's (first line, last line), and which entries are wrong."""
    lines = ["models:"]
    spans, wrong = [], []
    previous: dict = {}
    valid_keys: set[tuple[str, str]] = set()  # (field, value) of the entries not broken
    for index, (entry, broken, reuse, name) in enumerate(plan):
        entry = {"id": f"model-{index}", "name": f"Model {index} {name}".strip()} | entry
        entry["base_url"] = "http://127.0.0.1:8080/v1"
        if reuse and previous:
            entry[reuse] = previous[reuse]
        previous = dict(entry)
        # A repeated id or name is wrong when an earlier entry that is otherwise fine has it.
        duplicate = any((key, entry[key]) in valid_keys for key in ("id", "name"))
        if broken is None:
            valid_keys |= {("id", entry["id"]), ("name", entry["name"])}
        else:
            entry = BREAKS[broken][1](entry)
        first = len(lines) + 1
        if isinstance(entry, list):
            lines.append("  - " + json.dumps(entry))
        else:
            for position, (key, value) in enumerate(entry.items()):
                lead = "  - " if position == 0 else "    "
                lines.append(f"{lead}{key}: {json.dumps(value, ensure_ascii=False)}")
        spans.append((first, len(lines)))
        wrong.append(broken is not None or duplicate)
    return "\n".join(lines) + "\n", spans, wrong


@pytest.mark.django_db
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=plans)
def test_a_catalog_file_is_imported_whole_or_rejected_with_a_line_in_every_wrong_entry(plan):
    text, spans, wrong = render(plan)
    before = LLMModel.objects.count()
    with transaction.atomic():
        try:
            report = catalog_load_yaml(text=text)
        except CatalogFileError as exc:
            assert any(wrong), f"a good file was refused: {exc.errors}\n{text}"
            assert LLMModel.objects.count() == before, "a refused file imported something"
            numbers = []
            for error in exc.errors:
                match = LINE.match(error)
                assert match, f"no line number in {error!r}"
                numbers.append(int(match.group(1)))
            for (first, last), bad in zip(spans, wrong, strict=True):
                if bad:
                    assert any(first <= n <= last for n in numbers), (exc.errors, text)
        else:
            assert not any(wrong), f"a wrong file was imported:\n{text}"
            assert report.created == [f"model-{i}" for i in range(len(plan))]
            assert LLMModel.objects.count() == before + len(plan)
        transaction.set_rollback(True)
