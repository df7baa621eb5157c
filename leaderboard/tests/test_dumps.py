import json

import pytest
from django.core.management import CommandError, call_command

from battles.models import Vote
from leaderboard import dumps, recompute
from leaderboard.models import ImportedVote
from llm_providers.models import LLMModel


def dump_line(**fields) -> str:
    line = {
        "model_a": "gpt-4",
        "model_b": "claude-2",
        "winner": "model_a",
        "turn": 1,
        "anony": True,
        "language": "English",
        "tstamp": 1700000000.5,
        "judge": "arena_user_1",
    }
    return json.dumps(line | fields)


def write(tmp_path, lines: list[str]):
    path = tmp_path / "battles.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_export_writes_fastchat_clean_battle_lines(rated, make_vote, tmp_path, capsys):
    alpha, bravo, _ = rated
    make_vote(alpha, bravo, "b", identity_leak=True)
    out = tmp_path / "out.jsonl"
    call_command("export_battles", "--output", str(out))
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 60
    assert "Exported 60 votes" in capsys.readouterr().err
    winners = {line["winner"] for line in lines}
    assert winners == {"model_a", "model_b", "tie", "tie (bothbad)"}
    first = lines[0]
    assert first["model_a"] == "Alpha" and first["model_b"] == "Bravo"
    assert first["anony"] is True and first["turn"] == 1
    assert isinstance(first["tstamp"], float)
    vote = Vote.objects.order_by("created_at", "pk").first()
    assert first["judge"] == vote.visitor_hash
    assert first["question_id"] == vote.battle.uuid.hex


def test_an_exported_dump_imported_elsewhere_gives_the_same_ratings(rated, tmp_path):
    before = {r.model.name: r.rating for r in recompute.ratings_recompute().rows.all()}
    out = tmp_path / "out.jsonl"
    call_command("export_battles", "--output", str(out))
    Vote.objects.all().delete()  # stands in for a fresh instance with the same catalog
    call_command("import_battles", str(out))
    assert ImportedVote.objects.count() == 60
    after = {r.model.name: r.rating for r in recompute.ratings_recompute().rows.all()}
    assert after == pytest.approx(before)


def test_importing_keeps_categories_and_style(three_models, make_vote, tmp_path):
    alpha, bravo, _ = three_models
    make_vote(
        alpha,
        bravo,
        "a",
        turns=3,
        prompt_chars=800,
        has_code=True,
        language="fr",
        style={
            "a": {"length": 900, "headers": 2, "lists": 3, "bold": 1},
            "b": {"length": 100, "headers": 0, "lists": 0, "bold": 0},
        },
    )
    out = tmp_path / "out.jsonl"
    call_command("export_battles", "--output", str(out))
    Vote.objects.all().delete()
    call_command("import_battles", str(out))
    imported = ImportedVote.objects.get()
    assert (imported.turns, imported.prompt_chars, imported.has_code, imported.language) == (
        3,
        800,
        True,
        "fr",
    )
    assert imported.style["a"] == {"length": 900, "headers": 2, "lists": 3, "bold": 1}


def test_unknown_models_become_retired_catalog_entries(db, tmp_path, capsys):
    call_command("import_battles", str(write(tmp_path, [dump_line(), dump_line(tstamp=1.5e9)])))
    created = LLMModel.objects.get(name="gpt-4")
    assert created.status == LLMModel.Status.RETIRED
    assert created.base_url == dumps.IMPORTED_BASE_URL
    assert created.organization == ""
    out = capsys.readouterr().out
    assert "Imported 2 votes" in out and "gpt-4, claude-2" in out
    assert ImportedVote.objects.filter(language="en").count() == 2


def test_a_file_with_bad_lines_imports_nothing_and_names_the_lines(db, tmp_path, capsys):
    path = write(
        tmp_path,
        [
            dump_line(),
            "{not json",
            dump_line(winner="model_c"),
            dump_line(model_b="gpt-4"),
            dump_line(tstamp="yesterday"),
        ],
    )
    with pytest.raises(CommandError, match="4 bad line\\(s\\); nothing was imported"):
        call_command("import_battles", str(path))
    err = capsys.readouterr().err
    assert "line 2: not valid JSON" in err
    assert "line 3: winner must be one of" in err
    assert "line 4: model_a and model_b are the same model" in err
    assert "line 5: tstamp must be a unix time" in err
    assert not ImportedVote.objects.exists()
    assert not LLMModel.objects.exists()


def test_skip_bad_imports_the_good_lines(db, tmp_path, capsys):
    path = write(tmp_path, [dump_line(), "[]", dump_line(question_id="q2", winner="tie (bothbad)")])
    call_command("import_battles", str(path), "--skip-bad")
    assert "line 2: not a JSON object" in capsys.readouterr().err
    assert sorted(ImportedVote.objects.values_list("choice", flat=True)) == ["a", "bothbad"]


def test_importing_the_same_file_twice_adds_nothing(db, tmp_path, capsys):
    path = write(tmp_path, [dump_line(question_id="q1"), dump_line(question_id="q2")])
    call_command("import_battles", str(path))
    call_command("import_battles", str(path))
    assert ImportedVote.objects.count() == 2
    assert "(2 already there" in capsys.readouterr().out


def test_battles_where_names_were_shown_are_skipped(db, tmp_path, capsys):
    call_command("import_battles", str(write(tmp_path, [dump_line(anony=False)])))
    assert not ImportedVote.objects.exists()
    assert "1 non-anonymous battles skipped" in capsys.readouterr().out


def test_a_missing_file_is_a_clear_error(db, tmp_path):
    with pytest.raises(CommandError, match="Cannot read"):
        call_command("import_battles", str(tmp_path / "nope.jsonl"))


def test_import_streams_in_batches_and_reports_progress(db, monkeypatch):
    monkeypatch.setattr(dumps, "PROGRESS_EVERY", 3)
    seen = []
    lines = (dump_line(question_id=f"q{i}", tstamp=1.6e9 + i) for i in range(10))
    report = dumps.battles_import(lines=lines, batch_size=4, progress=seen.append)
    assert report.imported == 10
    assert seen == [3, 6, 9]


def test_the_export_leaves_out_what_the_ratings_leave_out(
    settings, filters_on, consensus, make_vote
):
    settings.ARENA_PROMPT_DEDUP_PERCENTILE = 0.9
    alpha, bravo, charlie = consensus  # 40 honest votes
    for i in range(10):  # flagged by the outlier test
        make_vote(*[(alpha, bravo, "b"), (bravo, charlie, "b")][i % 2], visitor_hash="contrarian")
    hot = [make_vote(alpha, charlie, "tie", prompt_hash="f" * 64) for _ in range(4)]
    for i in range(9):
        make_vote(alpha, charlie, "a", prompt_hash=f"{i:064x}")
    make_vote(alpha, bravo, "a", flagged_invalid=True)
    recompute.ratings_recompute(style=False)
    lines: list[str] = []

    written = dumps.battles_export(write=lines.append)

    exported = [json.loads(line) for line in lines]
    assert written == len(exported) == 40 + 1 + 9
    assert {line["judge"] for line in exported}.isdisjoint({"contrarian"})
    hot_ids = {vote.battle.uuid.hex for vote in hot}
    assert [line["question_id"] for line in exported if line["question_id"] in hot_ids] == [
        hot[0].battle.uuid.hex
    ]
    assert [line["tstamp"] for line in exported] == sorted(line["tstamp"] for line in exported)
