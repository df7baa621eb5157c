"""Writes to the model catalog: YAML import/export and the circuit breaker."""

from dataclasses import dataclass, field
from datetime import timedelta

import yaml
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from llm_providers.models import LLMModel

# YAML key -> model field. The first eight are the original llmbattler's models.yaml format.
YAML_FIELDS = {
    "id": "slug",
    "name": "name",
    "model": "model",
    "base_url": "base_url",
    "api_key_env": "api_key_env",
    "organization": "organization",
    "license": "license",
    "status": "status",
    "temperature": "temperature",
    "top_p": "top_p",
    "max_tokens": "max_tokens",
    "system_prompt": "system_prompt",
    "stop": "stop",
    "extra_body": "extra_body",
    "weight": "weight",
    "url": "url",
    "notes": "notes",
}
REQUIRED = ("id", "name", "model", "base_url")
TYPES = {
    "temperature": (int, float),
    "top_p": (int, float),
    "weight": (int, float),
    "max_tokens": (int,),
}
NULLABLE_TEXT = {"api_key_env", "organization", "license", "system_prompt", "url", "notes"}
# Structured fields: their empty value, and what they must be (checked by the model's validator).
STRUCTURED = {"stop": list, "extra_body": dict}


class CatalogFileError(Exception):
    """A models.yaml that cannot be imported; `errors` lists every problem with its line."""

    def __init__(self, errors: list[str]):
        self.errors = errors
        super().__init__("\n".join(errors))


@dataclass
class LoadReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)


def _mapping_lines(node: yaml.MappingNode, where: str, errors: list[str]) -> dict[str, int]:
    lines: dict[str, int] = {}
    for key_node, _ in node.value:
        key = key_node.value
        line = key_node.start_mark.line + 1
        if key in lines:
            errors.append(f"line {line}: {where}: '{key}' appears twice")
        lines[key] = line
    return lines


def _check_entry(raw, node, index: int, errors: list[str]) -> dict | None:
    where = f"models[{index}]"
    line = node.start_mark.line + 1
    if not isinstance(raw, dict) or not isinstance(node, yaml.MappingNode):
        errors.append(f"line {line}: {where}: each model must be a mapping of fields")
        return None
    lines = _mapping_lines(node, where, errors)
    ok = True
    for key in raw:
        if key not in YAML_FIELDS:
            errors.append(
                f"line {lines.get(key, line)}: {where}: unknown field '{key}' "
                f"(known: {', '.join(YAML_FIELDS)})"
            )
            ok = False
    for key in REQUIRED:
        if raw.get(key) in (None, ""):
            errors.append(f"line {line}: {where}: '{key}' is required")
            ok = False
    values = {}
    for key, value in raw.items():
        if key not in YAML_FIELDS:
            continue
        at = f"line {lines.get(key, line)}: {where}.{key}"
        if key in STRUCTURED:
            if value is None:
                value = STRUCTURED[key]()
            elif not isinstance(value, STRUCTURED[key]):
                kind = "a list of strings" if key == "stop" else "a mapping of request fields"
                errors.append(f"{at}: must be {kind}, got {value!r}")
                ok = False
                continue
            values[YAML_FIELDS[key]] = value
            continue
        if value is None:
            if key in NULLABLE_TEXT:
                value = ""
            elif key in TYPES:
                values[YAML_FIELDS[key]] = None
                continue
            else:
                continue
        if key in TYPES:
            if isinstance(value, bool) or not isinstance(value, TYPES[key]):
                kind = "a whole number" if TYPES[key] == (int,) else "a number"
                errors.append(f"{at}: must be {kind}, got {value!r}")
                ok = False
                continue
        elif not isinstance(value, str):
            errors.append(f"{at}: must be text, got {value!r}")
            ok = False
            continue
        elif "\x00" in value:
            # YAML can spell one ("\0"); PostgreSQL cannot store it and would fail the import.
            errors.append(f"{at}: must not contain a NUL character")
            ok = False
            continue
        values[YAML_FIELDS[key]] = value
    if not ok:
        return None
    # Reuse the model's own validators (URL, ranges, status, env var name) for the values.
    candidate = LLMModel(**values)
    try:
        candidate.full_clean(validate_unique=False, validate_constraints=False)
    except ValidationError as exc:
        for field_name, messages in exc.message_dict.items():
            key = next((k for k, v in YAML_FIELDS.items() if v == field_name), field_name)
            for message in messages:
                errors.append(f"line {lines.get(key, line)}: {where}.{key}: {message}")
        return None
    return values


def catalog_parse_yaml(*, text: str) -> list[dict]:
    """Parse and validate a models.yaml; raise CatalogFileError listing every problem."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark else ""
        raise CatalogFileError(
            [f"{where}not valid YAML ({getattr(exc, 'problem', exc)})"]
        ) from None
    finally:
        loader.dispose()
    if isinstance(data, dict) and isinstance(node, yaml.MappingNode):
        extra = set(data) - {"models"}
        if extra:
            raise CatalogFileError(
                [f"unknown top-level keys: {', '.join(sorted(map(str, extra)))}"]
            )
        items_node = next((v for k, v in node.value if k.value == "models"), None)
        data = data.get("models")
    else:
        items_node = node
    if not isinstance(data, list) or not isinstance(items_node, yaml.SequenceNode):
        raise CatalogFileError(["the file must hold a top-level 'models:' list"])
    errors: list[str] = []
    entries: list[dict] = []
    seen: dict[str, int] = {}
    names: dict[str, int] = {}
    for index, (raw, item_node) in enumerate(zip(data, items_node.value, strict=True)):
        values = _check_entry(raw, item_node, index, errors)
        if values is None:
            continue
        line = item_node.start_mark.line + 1
        for key, registry in (("slug", seen), ("name", names)):
            if values[key] in registry:
                label = "id" if key == "slug" else "name"
                errors.append(
                    f"line {line}: models[{index}]: duplicate {label} '{values[key]}' "
                    f"(first at line {registry[values[key]]})"
                )
            registry[values[key]] = line
        entries.append(values)
    if errors:
        raise CatalogFileError(errors)
    return entries


def catalog_load_yaml(*, text: str, dry_run: bool = False) -> LoadReport:
    """Create or update catalog entries from a models.yaml, all or nothing."""
    entries = catalog_parse_yaml(text=text)
    report = LoadReport()
    with transaction.atomic():
        for values in entries:
            existing = LLMModel.objects.filter(slug=values["slug"]).first()
            if existing is None:
                obj = LLMModel(**values)
                obj.full_clean()
                if not dry_run:
                    obj.save()
                report.created.append(values["slug"])
                continue
            changed = {k: v for k, v in values.items() if getattr(existing, k) != v}
            if not changed:
                report.unchanged.append(values["slug"])
                continue
            for key, value in changed.items():
                setattr(existing, key, value)
            existing.full_clean()
            if not dry_run:
                existing.save()
            report.updated.append(values["slug"])
        if dry_run:
            transaction.set_rollback(True)
    return report


def catalog_dump_yaml(*, queryset=None) -> str:
    models = []
    for obj in queryset if queryset is not None else LLMModel.objects.order_by("slug"):
        entry = {}
        for key, field_name in YAML_FIELDS.items():
            value = getattr(obj, field_name)
            if value in ("", None, [], {}) and key not in REQUIRED and key != "api_key_env":
                continue
            entry[key] = value if value != "" else None
        models.append(entry)
    return yaml.safe_dump({"models": models}, sort_keys=False, allow_unicode=True)


def model_record_failure(*, model_id: int, error: str) -> None:
    """Count a provider failure; enough in a row open the circuit for a cool-down."""
    now = timezone.now()
    LLMModel.objects.filter(pk=model_id).update(
        consecutive_failures=F("consecutive_failures") + 1,
        last_error=error[:300],
        last_error_at=now,
    )
    LLMModel.objects.filter(
        pk=model_id, consecutive_failures__gte=settings.ARENA_CIRCUIT_FAILURES
    ).update(circuit_open_until=now + timedelta(seconds=settings.ARENA_CIRCUIT_COOLDOWN_SECONDS))


def model_record_success(*, model_id: int) -> None:
    """A success closes the circuit (the half-open probe after the cool-down succeeded)."""
    LLMModel.objects.filter(pk=model_id).exclude(
        consecutive_failures=0, circuit_open_until__isnull=True
    ).update(consecutive_failures=0, circuit_open_until=None)


def models_set_status(*, queryset, status: str) -> int:
    """Set the status of several models one by one, so each change is recorded (ModelChange)."""
    with transaction.atomic():
        models = list(queryset.select_for_update())
        for model in models:
            if model.status != status:
                model.status = status
                model.save(update_fields=["status", "updated_at"])
    return len(models)
