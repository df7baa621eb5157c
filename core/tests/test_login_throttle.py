"""No password guessing on /accounts/login/ and /admin/login/ (core/login_throttle.py)."""

from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models import F
from django.test import Client

PASSWORD = "correct-horse-battery-9"
PAGES = ["/accounts/login/", "/admin/login/"]


@pytest.fixture
def admin_user(db):
    return get_user_model().objects.create_user(
        "admin", "admin@example.com", PASSWORD, is_staff=True, is_superuser=True
    )


def log_in(path: str, *, username: str, password: str, address: str, **headers):
    return Client().post(
        path,
        {"username": username, "password": password, "next": "/"},
        REMOTE_ADDR=address,
        **headers,
    )


def assert_locked(response) -> int:
    assert response.status_code == 429, response.content[:300]
    assert b"Too many failed logins" in response.content
    retry_after = int(response["Retry-After"])
    assert 0 < retry_after <= settings.ARENA_LOGIN_COOLDOWN_SECONDS
    return retry_after


def guess(path: str, times: int, *, username: str = "admin", address: str = "198.51.100.1"):
    return [
        log_in(path, username=username, password=f"wrong-{i}", address=address).status_code
        for i in range(times)
    ]


@pytest.mark.parametrize("path", PAGES)
def test_after_the_limit_of_wrong_passwords_the_page_answers_429_with_retry_after(path, admin_user):
    limit = settings.ARENA_LOGIN_FAILURES
    assert guess(path, limit - 1) == [200] * (limit - 1)
    assert_locked(log_in(path, username="admin", password="wrong", address="198.51.100.1"))
    # Even the right password waits for the cool-down from that address.
    assert_locked(log_in(path, username="admin", password=PASSWORD, address="198.51.100.1"))


@pytest.mark.parametrize("path", PAGES)
def test_the_right_password_still_works_from_another_address(path, admin_user):
    guess(path, settings.ARENA_LOGIN_FAILURES)
    response = log_in(path, username="admin", password=PASSWORD, address="203.0.113.9")
    assert response.status_code == 302
    assert response["Location"] == "/"


@pytest.mark.parametrize("path", PAGES)
def test_the_cool_down_ends(path, admin_user):
    guess(path, settings.ARENA_LOGIN_FAILURES)
    assert_locked(log_in(path, username="admin", password=PASSWORD, address="198.51.100.1"))
    # The failures' time moved back past the cool-down, as if it had been waited out.
    AccessAttempt.objects.update(
        attempt_time=F("attempt_time")
        - timedelta(seconds=settings.ARENA_LOGIN_COOLDOWN_SECONDS + 1)
    )
    response = log_in(path, username="admin", password=PASSWORD, address="198.51.100.1")
    assert response.status_code == 302


def test_one_address_spraying_many_user_names_meets_the_longer_per_address_limit(admin_user):
    per_address = settings.ARENA_LOGIN_FAILURES_PER_ADDRESS
    per_name = settings.ARENA_LOGIN_FAILURES - 1  # each name stays under its own limit
    statuses = []
    for i in range(per_address):
        statuses += guess(PAGES[0], 1, username=f"user{i // per_name}")
    assert statuses == [200] * (per_address - 1) + [429]
    assert_locked(log_in(PAGES[0], username="admin", password=PASSWORD, address="198.51.100.1"))
    assert (
        log_in(PAGES[0], username="admin", password=PASSWORD, address="203.0.113.9").status_code
        == 302
    )


def test_a_login_with_ones_own_account_does_not_reset_the_guesses_at_another(db, admin_user):
    get_user_model().objects.create_user("mallory", "m@example.com", PASSWORD)
    guess(PAGES[0], settings.ARENA_LOGIN_FAILURES - 1)
    ok = log_in(PAGES[0], username="mallory", password=PASSWORD, address="198.51.100.1")
    assert ok.status_code == 302
    assert_locked(log_in(PAGES[0], username="admin", password="wrong", address="198.51.100.1"))


def test_a_successful_login_forgets_its_own_failures(admin_user):
    guess(PAGES[0], settings.ARENA_LOGIN_FAILURES - 1)
    assert (
        log_in(PAGES[0], username="admin", password=PASSWORD, address="198.51.100.1").status_code
        == 302
    )
    assert not AccessAttempt.objects.filter(username="admin").exists()
    assert guess(PAGES[0], settings.ARENA_LOGIN_FAILURES - 1) == [200] * (
        settings.ARENA_LOGIN_FAILURES - 1
    )


def test_the_address_is_the_arenas_one_rule_behind_a_trusted_proxy(settings, admin_user):
    settings.ARENA_TRUSTED_PROXIES = ["10.0.0.1"]
    forwarded = {"HTTP_X_FORWARDED_FOR": "198.51.100.7"}
    for i in range(settings.ARENA_LOGIN_FAILURES - 1):
        log_in(PAGES[0], username="admin", password=f"w{i}", address="10.0.0.1", **forwarded)
    assert_locked(log_in(PAGES[0], username="admin", password="w", address="10.0.0.1", **forwarded))
    assert AccessAttempt.objects.get().ip_address == "198.51.100.7"
    # Another client behind the same proxy is not locked out.
    other = log_in(
        PAGES[0],
        username="admin",
        password=PASSWORD,
        address="10.0.0.1",
        HTTP_X_FORWARDED_FOR="198.51.100.8",
    )
    assert other.status_code == 302
    # From an untrusted peer the header is ignored: a forged address does not escape the lock.
    guess(PAGES[0], settings.ARENA_LOGIN_FAILURES, address="203.0.113.5")
    forged = log_in(
        PAGES[0],
        username="admin",
        password=PASSWORD,
        address="203.0.113.5",
        HTTP_X_FORWARDED_FOR="192.0.2.1",
    )
    assert_locked(forged)


def test_staff_read_and_clear_the_failed_logins_in_admin(staff, admin_user):
    guess(PAGES[1], settings.ARENA_LOGIN_FAILURES)
    listing = staff.get("/admin/axes/accessattempt/")
    assert listing.status_code == 200
    assert b"198.51.100.1" in listing.content
    attempt = AccessAttempt.objects.get(username="admin")
    deleted = staff.post(f"/admin/axes/accessattempt/{attempt.pk}/delete/", {"post": "yes"})
    assert deleted.status_code == 302
    response = log_in(PAGES[1], username="admin", password=PASSWORD, address="198.51.100.1")
    assert response.status_code == 302
