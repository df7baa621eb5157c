import csv
import io
import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from leaderboard import recompute
from leaderboard.models import FlaggedVoter
from llm_providers.models import LLMModel


def names(response) -> list[str]:
    """Model names in the board table, top to bottom."""
    body = response.content.decode()
    table = body[body.index('<table class="board">') :]
    return re.findall(r'<a href="/leaderboard/m/[\w-]+/">([^<]+)</a>', table)


@pytest.fixture
def board(rated):
    recompute.ratings_recompute()
    return rated


def test_the_empty_board_says_ratings_come_after_votes(client, db):
    response = client.get("/leaderboard/")
    assert response.status_code == 200
    assert b"No ratings yet" in response.content


def test_votes_not_yet_counted_are_announced_not_called_no_ratings(client, rated):
    body = client.get("/leaderboard/").content.decode()
    assert "No ratings yet" not in body
    assert "The first votes are in" in body


def test_it_lists_models_by_rank_with_score_interval_votes_and_win_rate(client, board):
    response = client.get("/leaderboard/")
    assert names(response) == ["Alpha", "Bravo", "Charlie"]
    body = response.content.decode()
    assert "from 60 votes" in body
    assert re.search(r"\+\d+/−\d+", body)
    assert "89%" in body  # Alpha: 34 wins, 4 losses
    assert "Alpha Labs" in body


def test_models_below_the_minimum_votes_are_listed_last_greyed_and_unranked(
    client, board, make_model, make_votes, settings
):
    newcomer = make_model("Delta")
    make_votes(newcomer, board[0], "a", 4)
    recompute.ratings_recompute()
    response = client.get("/leaderboard/")
    assert names(response) == ["Alpha", "Bravo", "Charlie", "Delta"]
    body = response.content.decode()
    row = re.search(r'<tr class="below-min">(.*?)</tr>', body, re.S).group(1)
    assert "Delta" in row and "too few votes" in row
    assert re.search(r'<td class="num">–</td>', row)  # no rank
    assert re.search(r'<td class="num">4</td>', row)  # its votes
    assert "score is not yet meaningful" in body
    # Sorted by score the newcomer's high score still comes after the ranked models.
    assert names(client.get("/leaderboard/?sort=score&dir=desc"))[-1] == "Delta"

    settings.ARENA_MIN_VOTES_TO_SHOW = 3
    response = client.get("/leaderboard/")
    assert 'class="below-min"' not in response.content.decode()
    row = re.search(r"Delta</a>(.*?)</td>", response.content.decode(), re.S).group(1)
    assert "provisional" in row


def test_json_and_csv_mark_the_models_below_the_minimum_votes(
    client, board, make_model, make_votes
):
    make_votes(make_model("Delta"), board[0], "a", 4)
    recompute.ratings_recompute()
    data = client.get("/leaderboard.json").json()
    assert data["snapshot"]["min_votes_to_rank"] == 5
    by_name = {model["model"]: model for model in data["models"]}
    assert by_name["Delta"]["below_min_votes"] is True
    assert by_name["Delta"]["rank"] is None and by_name["Delta"]["votes"] == 4
    assert by_name["Alpha"]["below_min_votes"] is False and by_name["Alpha"]["rank"] == 1
    rows = list(csv.DictReader(io.StringIO(client.get("/leaderboard.csv").content.decode())))
    assert [(r["model"], r["below_min_votes"], r["rank"]) for r in rows][-1] == (
        "Delta",
        "True",
        "",
    )


def test_the_board_says_how_long_ago_it_was_computed(client, board):
    body = client.get("/leaderboard/").content.decode()
    age = re.search(r'<span class="board-age" data-age="(\d+)">(\d+) s ago</span>', body)
    assert age and int(age.group(1)) < 60


def test_a_poll_gets_no_content_until_a_newer_board_exists(client, board, make_vote):
    htmx = {"HX-Request": "true"}
    body = client.get("/leaderboard/?sort=score").content.decode()
    poll = re.search(r'class="board-poll" hx-get="([^"]+)" hx-trigger="every 15.0s"', body)
    url = poll.group(1).replace("&amp;", "&")
    assert "sort=score" in url and "since=" in url
    assert client.get(url, headers=htmx).status_code == 204

    make_vote(board[0], board[1], "b")
    recompute.ratings_recompute()
    fresh = client.get(url, headers=htmx)
    assert fresh.status_code == 200
    assert fresh.content.decode().lstrip().startswith('<section id="board"')
    assert "from 61 votes" in fresh.content.decode()


def test_a_poll_before_the_first_board_gets_it_once_computed(client, rated):
    htmx = {"HX-Request": "true"}
    body = client.get("/leaderboard/").content.decode()
    url = re.search(r'class="board-poll" hx-get="([^"]+)"', body).group(1)
    assert client.get(url, headers=htmx).status_code == 204
    recompute.ratings_recompute()
    assert "from 60 votes" in client.get(url, headers=htmx).content.decode()


def test_columns_sort_both_ways(client, board):
    assert names(client.get("/leaderboard/?sort=score&dir=asc")) == ["Charlie", "Bravo", "Alpha"]
    assert names(client.get("/leaderboard/?sort=model&dir=desc")) == ["Charlie", "Bravo", "Alpha"]
    assert names(client.get("/leaderboard/?sort=votes&dir=desc")) == ["Alpha", "Bravo", "Charlie"]


def test_the_sort_links_toggle_the_direction_and_keep_the_filters(client, board):
    body = client.get("/leaderboard/?q=a&sort=score&dir=desc").content.decode()
    link = re.search(r'aria-sort="descending">\s*<a href="([^"]+)"', body).group(1)
    assert "dir=asc" in link and "q=a" in link and "sort=score" in link


def test_search_organisation_and_license_filters(client, board):
    LLMModel.objects.filter(name="Bravo").update(organization="Shared", license="MIT")
    LLMModel.objects.filter(name="Charlie").update(organization="Shared")
    assert names(client.get("/leaderboard/?q=char")) == ["Charlie"]
    assert names(client.get("/leaderboard/?organization=Shared")) == ["Bravo", "Charlie"]
    assert names(client.get("/leaderboard/?organization=Shared&license=MIT")) == ["Bravo"]


def test_a_filter_that_matches_nothing_says_so(client, board):
    response = client.get("/leaderboard/?q=zzz")
    assert b"No model matches these filters" in response.content


def test_retired_models_show_only_when_asked(client, board):
    LLMModel.objects.filter(name="Charlie").update(status=LLMModel.Status.RETIRED)
    assert names(client.get("/leaderboard/")) == ["Alpha", "Bravo"]
    assert names(client.get("/leaderboard/?retired=on")) == ["Alpha", "Bravo", "Charlie"]


def test_a_category_shows_its_own_snapshot(client, board, make_votes):
    alpha, _, charlie = board
    make_votes(charlie, alpha, "a", 6, has_code=True)
    recompute.ratings_recompute(category="code")
    response = client.get("/leaderboard/?category=code")
    assert names(response) == ["Charlie", "Alpha"]
    assert b"Coding" in response.content


def test_an_unknown_category_is_reported_and_overall_is_shown(client, board):
    response = client.get("/leaderboard/?category=cooking")
    assert b"Unknown category" in response.content
    assert names(response) == ["Alpha", "Bravo", "Charlie"]


def test_a_category_without_a_snapshot_has_its_empty_state(client, board):
    response = client.get("/leaderboard/?category=lang:fr")
    assert b"No ratings yet for Language: fr" in response.content


def test_an_htmx_request_gets_only_the_board_fragment(client, board):
    page = client.get("/leaderboard/?sort=score")
    fragment = client.get("/leaderboard/?sort=score", headers={"HX-Request": "true"})
    assert b"<html" in page.content and b'id="board-form"' in page.content
    assert b"<html" not in fragment.content and b'id="board-form"' not in fragment.content
    assert fragment.content.decode().lstrip().startswith('<section id="board"')
    assert names(fragment) == names(page)


def test_the_page_has_its_charts_as_inline_svg_without_script_or_inline_style(client, board):
    recompute.ratings_recompute(style=False)  # a second snapshot: the history has two points
    body = client.get("/leaderboard/").content.decode()
    assert body.count("<svg") == 4
    assert "<script>" not in body and "<script " not in body.replace('<script src="', "")
    assert not re.search(r"\sstyle=", body)


def test_the_page_needs_a_bounded_number_of_queries(
    client, board, make_model, make_votes, django_assert_max_num_queries
):
    for i in range(6):
        make_votes(make_model(f"Extra{i}"), board[0], "b", 6)
    recompute.ratings_recompute()
    recompute.ratings_recompute(category="code")
    with django_assert_max_num_queries(10):
        response = client.get("/leaderboard/")
    assert len(names(response)) == 9


def test_the_model_page_shows_head_to_head_and_recent_votes(client, board):
    response = client.get(f"/leaderboard/m/{board[0].slug}/")
    assert response.status_code == 200
    body = response.content.decode()
    assert "Head to head" in body
    bravo = re.search(r"Bravo</a></td>(.*?)</tr>", body, re.S).group(1)
    assert re.findall(r">(\d+%?)<", bravo) == ["24", "20", "4", "0", "0", "83%"]
    assert "60 in the last 7 days" not in body and "44 in the last 7 days" in body


def test_an_unknown_model_page_is_not_found(client, db):
    assert client.get("/leaderboard/m/nobody/").status_code == 404


def test_json_has_the_same_rows_as_the_page_and_filters_by_category(client, board, make_votes):
    data = client.get("/leaderboard.json").json()
    assert data["snapshot"]["votes"] == 60
    assert [m["model"] for m in data["models"]] == ["Alpha", "Bravo", "Charlie"]
    alpha = data["models"][0]
    assert alpha["rank"] == 1 and alpha["votes"] == 44 and alpha["lower"] < alpha["score"]
    empty = client.get("/leaderboard.json?category=code").json()
    assert empty["snapshot"] is None and empty["models"] == []


def test_csv_has_the_same_rows_as_the_page(client, board):
    response = client.get("/leaderboard.csv?sort=score&dir=asc")
    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert [r["model"] for r in rows] == ["Charlie", "Bravo", "Alpha"]
    assert rows[-1]["votes"] == "44"


# --- what each page costs the database --------------------------------------------------------

PAGES = {
    "board": ("/leaderboard/", {}),
    "board fragment": ("/leaderboard/?sort=score", {"HX-Request": "true"}),
    "model page": ("/leaderboard/m/alpha/", {}),
    "json": ("/leaderboard.json", {}),
    "csv": ("/leaderboard.csv", {}),
}


@pytest.mark.parametrize("page", list(PAGES))
def test_a_page_costs_the_same_queries_with_more_models_and_votes(
    page, client, board, make_model, make_votes, django_assert_num_queries
):
    url, headers = PAGES[page]
    client.get("/leaderboard/")  # the visitor's cookie is set once, on the first page
    with CaptureQueriesContext(connection) as few:
        small = client.get(url, headers=headers)
    alpha = board[0]
    for i in range(6):
        make_votes(make_model(f"Extra{i}"), alpha, "b", 6)
    make_votes(alpha, board[1], "a", 20)
    recompute.ratings_recompute_all()

    with django_assert_num_queries(len(few)):
        large = client.get(url, headers=headers)
    assert small.status_code == large.status_code == 200
    assert len(large.content) > len(small.content)  # six more models listed


def test_the_model_page_counts_the_votes_the_last_recompute_counted_and_newer_ones(
    client, consensus, make_vote, settings, filters_on
):
    settings.ARENA_PROMPT_DEDUP_PERCENTILE = 0.9
    alpha, bravo, charlie = consensus
    for i in range(10):  # a voter the outlier test flags
        make_vote(*[(alpha, bravo, "b"), (bravo, charlie, "b")][i % 2], visitor_hash="contrarian")
    for i in range(9):
        make_vote(alpha, charlie, "a", prompt_hash=f"{i:064x}")
    for _ in range(8):  # a hot prompt: only its first vote counts
        make_vote(charlie, alpha, "a", prompt_hash="f" * 64)
    make_vote(alpha, bravo, "b", identity_leak=True)
    snapshot = recompute.ratings_recompute(style=False)
    assert snapshot.excluded["prompt_dedup"] == 7 and snapshot.excluded["voter_flagged"] == 10
    assert FlaggedVoter.objects.filter(visitor_hash="contrarian").exists()

    def record() -> tuple[int, int, int]:
        """Alpha's wins, losses and ties (both-bad included) over its head-to-head table."""
        body = client.get("/leaderboard/m/alpha/").content.decode()
        table = body[body.index("Head to head") :]
        rows = [
            [int(n) for n in re.findall(r">(\d+)<", cells)]  # battles, wins, losses, ties, bad
            for cells in re.findall(r'/leaderboard/m/\w+/">[^<]+</a></td>(.*?)</tr>', table, re.S)
        ]
        assert len(rows) == 2  # Bravo and Charlie
        wins = sum(r[1] for r in rows)
        losses = sum(r[2] for r in rows)
        ties = sum(r[3] + r[4] for r in rows)
        return wins, losses, ties

    row = snapshot.rows.get(model=alpha)
    assert record() == (row.wins, row.losses, row.ties)
    make_vote(charlie, alpha, "a", prompt_hash="f" * 64)  # still past the hot prompt's keep
    make_vote(alpha, bravo, "b", visitor_hash="contrarian")  # still flagged
    make_vote(bravo, alpha, "a")  # counted
    assert record() == (row.wins, row.losses + 1, row.ties)
