"""Battle dumps in FastChat's `clean_battle` JSON-lines format: export and import.

`battles_export` writes the counted arena votes (and, if asked, the imported ones and the
side-by-side votes, the last marked `anony: false` as FastChat marks its named battles) the way
Chatbot Arena publishes its battles; `battles_import` loads such a file into ImportedVote, all
or nothing.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from django.db import transaction
from django.db.models import F
from django.utils.text import slugify

from battles.models import NamedVote, Vote
from leaderboard.exclusions import counted_filter, filter_plan
from leaderboard.models import ImportedVote
from llm_providers.models import LLMModel

WINNERS = {"a": "model_a", "b": "model_b", "tie": "tie", "bothbad": "tie (bothbad)"}
CHOICE_FOR_WINNER = {winner: choice for choice, winner in WINNERS.items()}
IMPORTED_BASE_URL = "http://imported.invalid/v1"
PROGRESS_EVERY = 100_000
# Public dumps name languages in English; ours are ISO 639 codes.
LANGUAGE_NAMES = {
    "english": "en",
    "chinese": "zh",
    "russian": "ru",
    "spanish": "es",
    "german": "de",
    "french": "fr",
    "japanese": "ja",
    "korean": "ko",
    "portuguese": "pt",
    "italian": "it",
    "polish": "pl",
    "vietnamese": "vi",
    "arabic": "ar",
    "dutch": "nl",
    "turkish": "tr",
    "indonesian": "id",
    "ukrainian": "uk",
    "persian": "fa",
    "hindi": "hi",
    "swedish": "sv",
}
_ISO_RE = re.compile(r"^[a-z]{2,3}$")


def _metadata(style: dict, prompt_chars: int) -> dict:
    metadata = {"first_prompt_chars": prompt_chars}
    for side in ("a", "b"):
        features = style.get(side, {})
        metadata[f"sum_assistant_{side}_chars"] = features.get("length", 0)
        for name in ("headers", "lists", "bold"):
            metadata[f"{name.rstrip('s')}_count_{side}"] = features.get(name, 0)
    return metadata


def battles_export(
    *,
    write: Callable[[str], object],
    include_imported: bool = False,
    include_named: bool = False,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Write counted votes as FastChat `clean_battle` JSON lines; returns how many.

    With `include_named`, the side-by-side votes follow, `anony: false`: the visitor chose
    those models by name, so FastChat's rating (and our import) leave them out.
    """
    written = 0
    for anony, (
        question_id,
        model_a,
        model_b,
        judge,
        choice,
        turns,
        prompt_chars,
        has_code,
        language,
        style,
        created_at,
    ) in _votes_counted(include_imported=include_imported, include_named=include_named):
        line = {
            "question_id": question_id.hex if isinstance(question_id, uuid.UUID) else question_id,
            "model_a": model_a,
            "model_b": model_b,
            "winner": WINNERS[choice],
            "judge": judge,
            "turn": turns,
            "anony": anony,
            "language": language or "unknown",
            "tstamp": created_at.timestamp(),
            "is_code": has_code,
            "conv_metadata": _metadata(style or {}, prompt_chars),
        }
        write(json.dumps(line, ensure_ascii=False) + "\n")
        written += 1
        if progress and written % PROGRESS_EVERY == 0:
            progress(written)
    return written


def _votes_counted(*, include_imported: bool, include_named: bool) -> Iterator[tuple]:
    """(anonymous?, row) of the counted arena votes for the FastChat dump, oldest first,
    streamed from the database; then, if asked, the imported and the named votes."""
    columns = ("choice", "turns", "prompt_chars", "has_code", "language", "style", "created_at")
    plan = filter_plan()
    votes = (
        Vote.objects.filter(counted_filter(source=Vote, plan=plan))
        .order_by("created_at", "pk")
        .values_list(
            "battle__uuid", F("model_a__name"), F("model_b__name"), "visitor_hash", *columns
        )
    )
    yield from ((True, row) for row in votes.iterator(chunk_size=2000))
    if include_imported:
        imported = (
            ImportedVote.objects.filter(counted_filter(source=ImportedVote, plan=plan))
            .order_by("created_at", "pk")
            .values_list("external_id", F("model_a__name"), F("model_b__name"), "judge", *columns)
        )
        yield from ((True, row) for row in imported.iterator(chunk_size=2000))
    if include_named:
        named = (
            NamedVote.objects.filter(flagged_invalid=False)
            .order_by("created_at", "pk")
            .values_list(
                "battle__uuid", F("model_a__name"), F("model_b__name"), "visitor_hash", *columns
            )
        )
        yield from ((False, row) for row in named.iterator(chunk_size=2000))


class DumpLineError(ValueError):
    pass


@dataclass
class ImportReport:
    lines: int = 0
    imported: int = 0
    duplicates: int = 0
    not_anonymous: int = 0
    new_models: list[str] = field(default_factory=list)
    bad_lines: int = 0
    errors: list[str] = field(default_factory=list)  # the first few, "line N: what is wrong"
    applied: bool = False


class ImportRejectedError(Exception):
    def __init__(self, report: ImportReport):
        self.report = report
        super().__init__(
            f"{report.bad_lines} bad line(s); nothing was imported. "
            "Fix them, or pass --skip-bad to import the good lines."
        )


def _language(value) -> str:
    text = str(value or "").strip().lower()
    if _ISO_RE.match(text):
        return text
    return LANGUAGE_NAMES.get(text, "")


def _count(metadata: dict, key: str) -> int:
    value = metadata.get(key, 0)
    return int(value) if isinstance(value, int | float) and value >= 0 else 0


def _parse_line(raw: str) -> dict | None:
    """One dump line as ImportedVote fields; None for a non-anonymous battle (not rated)."""
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise DumpLineError(f"not valid JSON ({exc.msg})") from None
    if not isinstance(data, dict):
        raise DumpLineError("not a JSON object")
    names = [data.get("model_a"), data.get("model_b")]
    if not all(isinstance(n, str) and n.strip() for n in names):
        raise DumpLineError("model_a and model_b must be non-empty strings")
    if names[0].strip() == names[1].strip():
        raise DumpLineError("model_a and model_b are the same model")
    if data.get("winner") not in CHOICE_FOR_WINNER:
        raise DumpLineError(f"winner must be one of {', '.join(CHOICE_FOR_WINNER)}")
    tstamp = data.get("tstamp")
    if not isinstance(tstamp, int | float) or isinstance(tstamp, bool) or not 0 < tstamp < 1e11:
        raise DumpLineError("tstamp must be a unix time in seconds")
    turn = data.get("turn", 1)
    if not isinstance(turn, int) or isinstance(turn, bool) or not 1 <= turn <= 10_000:
        raise DumpLineError("turn must be a positive integer")
    if data.get("anony", True) is False:
        return None
    metadata = data.get("conv_metadata") if isinstance(data.get("conv_metadata"), dict) else {}
    style = {}
    for side in ("a", "b"):
        # Our dumps carry characters, FastChat's tokens: only the A/B ratio matters.
        length_key = f"sum_assistant_{side}_chars"
        if length_key not in metadata:
            length_key = f"sum_assistant_{side}_tokens"
        style[side] = {
            "length": _count(metadata, length_key),
            "headers": _count(metadata, f"header_count_{side}"),
            "lists": _count(metadata, f"list_count_{side}"),
            "bold": _count(metadata, f"bold_count_{side}"),
        }
    question_id = data.get("question_id")
    external_id = (
        str(question_id)[:64] if question_id else hashlib.sha256(raw.strip().encode()).hexdigest()
    )
    return {
        "external_id": external_id,
        "names": (names[0].strip(), names[1].strip()),
        "choice": CHOICE_FOR_WINNER[data["winner"]],
        "judge": str(data.get("judge") or "")[:64],
        "turns": turn,
        "prompt_chars": _count(metadata, "first_prompt_chars"),
        "has_code": data.get("is_code") is True,
        "language": _language(data.get("language")),
        "style": style,
        "created_at": dt.datetime.fromtimestamp(tstamp, tz=dt.UTC),
    }


class _Catalog:
    """Public model name -> id, creating a retired placeholder for a name we do not know."""

    def __init__(self, report: ImportReport):
        self.ids = dict(LLMModel.objects.values_list("name", "pk"))
        self.report = report

    def id_for(self, name: str) -> int:
        if name not in self.ids:
            base = slugify(name)[:90] or "imported"
            slug = base
            while LLMModel.objects.filter(slug=slug).exists():
                slug = f"{base}-{uuid.uuid4().hex[:6]}"
            model = LLMModel.objects.create(
                slug=slug,
                name=name[:200],
                organization="",
                license="",
                base_url=IMPORTED_BASE_URL,
                model=name[:300],
                status=LLMModel.Status.RETIRED,
                notes="Created by import_battles for a model named in a battle dump.",
            )
            self.ids[name] = model.pk
            self.report.new_models.append(name)
        return self.ids[name]


def battles_import(
    *,
    lines: Iterable[str],
    skip_bad: bool = False,
    batch_size: int = 5000,
    progress: Callable[[int], None] | None = None,
    max_errors_listed: int = 20,
) -> ImportReport:
    """Load a FastChat `clean_battle` JSON-lines dump into ImportedVote, in one transaction.

    Any bad line rolls everything back unless `skip_bad`; lines already imported (same
    question_id) are skipped, so a file can be imported again safely.
    """
    report = ImportReport()
    with transaction.atomic():
        before = ImportedVote.objects.count()
        catalog = _Catalog(report)
        for batch in _batches(_parsed(lines, report, max_errors_listed, progress), batch_size):
            if report.bad_lines and not skip_bad:
                continue  # the import will be rolled back: just read on to list every bad line
            ImportedVote.objects.bulk_create(
                [
                    ImportedVote(
                        model_a_id=catalog.id_for(fields["names"][0]),
                        model_b_id=catalog.id_for(fields["names"][1]),
                        **{k: v for k, v in fields.items() if k != "names"},
                    )
                    for fields in batch
                ],
                ignore_conflicts=True,
            )
        if report.bad_lines and not skip_bad:
            raise ImportRejectedError(report)
        report.imported = ImportedVote.objects.count() - before
        report.duplicates = report.lines - report.bad_lines - report.not_anonymous - report.imported
        report.applied = True
    return report


def _parsed(
    lines: Iterable[str],
    report: ImportReport,
    max_errors: int,
    progress: Callable[[int], None] | None,
) -> Iterator[dict]:
    for number, raw in enumerate(lines, start=1):
        if progress and number % PROGRESS_EVERY == 0:
            progress(number)
        if not raw.strip():
            continue
        report.lines += 1
        try:
            fields = _parse_line(raw)
        except DumpLineError as exc:
            report.bad_lines += 1
            if len(report.errors) < max_errors:
                report.errors.append(f"line {number}: {exc}")
            continue
        if fields is None:
            report.not_anonymous += 1
            continue
        yield fields


def _batches(items: Iterator[dict], size: int) -> Iterator[list[dict]]:
    batch: list[dict] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
