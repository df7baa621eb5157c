"""Before the vote nothing may identify the models: crawl every response of a battle."""

import httpx2

from battles.models import Battle
from battles.tests.conftest import wait_turn_finished
from battles.tests.test_stream import http_start, http_visitor, read_events


def forbidden_strings(*models) -> list[str]:
    strings = []
    for model in models:
        strings += [
            model.name,
            model.slug,
            model.model.split("?")[0],
            model.base_url,
            model.organization,
        ]
    return [s for s in strings if s]


def assert_blind(text: str, forbidden: list[str], where: str) -> None:
    lowered = text.lower()
    for needle in forbidden:
        assert needle.lower() not in lowered, f"{needle!r} leaked in {where}"


def test_no_response_names_a_model_before_the_vote(arena_server, make_model):
    alpha = make_model("Zorblax", knobs="ttft=0&tps=200&tokens=20", organization="Quuxcorp")
    bravo = make_model("Vintorak", knobs="ttft=0&tps=200&tokens=20", organization="Frobnitz AG")
    forbidden = forbidden_strings(alpha, bravo)
    with http_visitor(arena_server) as client:
        battle = http_start(client, "who are you really?")
        responses: list[tuple[str, httpx2.Response | str]] = []

        def crawl(url: str, **kwargs):
            response = client.get(url, **kwargs)
            responses.append((url, response))
            return response

        events = read_events(client, f"/b/{battle.uuid}/turns/0/events/")
        wait_turn_finished(battle)
        responses.append(("sse", "\n".join(f"{e['id']} {e['event']} {e['data']}" for e in events)))
        page = crawl(f"/c/{battle.conversation.uuid}/")
        crawl(f"/c/{battle.conversation.uuid}/", headers={"HX-Request": "true"})
        crawl(f"/b/{battle.uuid}/actions/", headers={"HX-Request": "true"})
        crawl("/sessions/", headers={"HX-Request": "true"})
        crawl("/sessions/?offset=0")
        follow = client.post(
            f"/b/{battle.uuid}/follow-up/",
            data={"prompt": "and again?"},
            headers={"HX-Request": "true"},
        )
        responses.append(("follow-up", follow))
        events = read_events(client, f"/b/{battle.uuid}/turns/1/events/")
        responses.append(
            ("sse-2", "\n".join(f"{e['id']} {e['event']} {e['data']}" for e in events))
        )
        wait_turn_finished(battle)
        crawl(f"/b/{battle.uuid}/actions/", headers={"HX-Request": "true"})
        assert page.status_code == 200 and len(responses) >= 8
        for where, response in responses:
            if isinstance(response, str):
                assert_blind(response, forbidden, where)
                continue
            assert_blind(response.text, forbidden, where)
            assert_blind(str(response.url), forbidden, f"{where} (url)")
            assert_blind(
                " ".join(f"{k}: {v}" for k, v in response.headers.items()),
                forbidden,
                f"{where} (headers)",
            )
        # After the vote the names are revealed.
        vote = client.post(
            f"/b/{battle.uuid}/vote/", data={"choice": "tie"}, headers={"HX-Request": "true"}
        )
        assert vote.status_code == 200
        assert "Zorblax" in vote.text and "Vintorak" in vote.text
        assert Battle.objects.get(pk=battle.pk).status == "voted"
