"""Daily limits in the web UI: the parent's card on the device page (+15 minutes in one tap), the
API, the child's /me page found by address, and the block page's words for a spent limit."""
from __future__ import annotations

import re

import pytest
from conftest import count_todays_use
from webui_fixtures import CONFIG_TEXT, XSS_PAYLOADS, Env, csrf_from, page_csrf

from filterd.family import limits
from filterd.rules.config import load_config

LIMITED = CONFIG_TEXT.replace(
    "    allow: [khanacademy.org]\n",
    "    allow: [khanacademy.org]\n    limits:\n      - {{name: youtube, services: [youtube], daily: 1h}}\n"
    "      - {{name: online, all: true, daily: 3h, per: profile}}\n")


@pytest.fixture
def env(tmp_path) -> Env:
    environment = Env(tmp_path, LIMITED.format(data_dir=tmp_path / "var"))
    environment.set_password()
    return environment


def use(env: Env, device: str, limit: str, minutes: int) -> None:
    """`minutes` of use today, counted as the daemon counts them (one query a minute)."""
    config = load_config(env.config_path)
    profile = config.rules.profiles[config.rules.profile_of(device)]
    chosen = next(l for l in profile.limits if l.name == limit)
    db = env.db()
    try:
        count_todays_use(db, chosen, limits.subject_for(chosen, device, profile.name), minutes, config.timezone)
    finally:
        db.close()


def test_the_device_page_shows_each_limit_and_adds_15_minutes_in_one_tap(env):
    use(env, "kids-tablet", "youtube", 5)
    parent = env.logged_in()
    page = parent.get("/devices/kids-tablet").get_data(as_text=True)
    assert "Daily limits" in page and "5 of 60 minutes used" in page and "55 left" in page
    assert "shared by the profile" in page          # the per-profile limit says so
    done = parent.post("/devices/kids-tablet/limits/youtube/extend",
                       data={"csrf_token": csrf_from(page), "minutes": "15"})
    assert done.status_code == 302
    page = parent.get("/devices/kids-tablet").get_data(as_text=True)
    assert "5 of 75 minutes used (+15 added today)" in page and "70 left" in page
    assert ("web UI", "limit extended", "youtube +15 min for device kids-tablet") in env.audit()


def test_adding_minutes_needs_the_csrf_token(env):
    parent = env.logged_in()
    refused = parent.post("/devices/kids-tablet/limits/youtube/extend", data={"minutes": "15"})
    assert refused.status_code in (400, 403)
    assert env.query("SELECT count(*) FROM limit_extensions") == [(0,)]


def test_the_api_lists_limits_and_extends_one(env):
    use(env, "kids-tablet", "youtube", 60)
    parent = env.logged_in()
    parent.environ_base["HTTP_X_CSRF_TOKEN"] = page_csrf(parent)
    rows = parent.get("/api/devices/Kids-Tablet/limits").get_json()
    youtube = next(r for r in rows if r["name"] == "youtube")
    assert (youtube["used_minutes"], youtube["allowed_minutes"], youtube["remaining_minutes"]) == (60, 60, 0)
    assert set(youtube) == {"name", "used_minutes", "allowed_minutes", "remaining_minutes", "resets_at"}
    body = parent.post("/api/devices/kids-tablet/limits/youtube/extend", json={"minutes": 15}).get_json()
    assert body["ok"] and body["remaining_minutes"] == 15 and body["allowed_minutes"] == 75
    wrong = parent.post("/api/devices/kids-tablet/limits/tiktok/extend", json={"minutes": 15})
    assert wrong.status_code == 400 and "has no limit" in wrong.get_json()["error"]
    assert parent.get("/api/devices/nobody/limits").status_code == 404


def test_the_me_page_shows_a_child_their_own_time_without_a_login(env):
    use(env, "kids-tablet", "youtube", 20)
    child = env.client(peer="192.168.1.23")
    page = child.get("/me")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert "kids-tablet today" in text and "40</span> minutes left of 60" in text
    assert "Bedtime" in text            # the profile's schedule, in the child's words
    assert "dad-phone" not in text      # nothing about other devices


def test_the_me_page_of_an_unnamed_device_says_so(env):
    text = env.client(peer="192.168.1.99").get("/me").get_data(as_text=True)
    assert "no name yet" in text


def test_a_spent_limit_on_the_block_page_says_so_in_a_childs_words_and_offers_more_time(env):
    use(env, "kids-tablet", "youtube", 60)
    child = env.client(peer="192.168.1.23", base_url="http://www.youtube.com")
    page = child.get("/")
    text = page.get_data(as_text=True)
    assert page.status_code == 403
    assert "You&#39;ve used your hour of YouTube for today. It&#39;s back tomorrow." in text
    assert "Ask for more time" in text
    token = re.search(r'name="token" value="([^"]+)"', text).group(1)
    asked = child.post("/", data={"token": token, "message": "homework video"})
    assert asked.status_code == 303
    request_row = env.query("SELECT unblocks, rule FROM access_requests")
    assert request_row == [("limit:youtube", "limit")]
    parent = env.logged_in()
    cards = parent.get("/requests").get_data(as_text=True)
    assert "more time for today&#39;s youtube limit" in cards


def test_approving_more_time_for_a_limit_adds_the_minutes(env):
    use(env, "kids-tablet", "youtube", 60)
    child = env.client(peer="192.168.1.23", base_url="http://www.youtube.com")
    token = re.search(r'name="token" value="([^"]+)"', child.get("/").get_data(as_text=True)).group(1)
    child.post("/", data={"token": token, "message": ""})
    request_id = env.query("SELECT id FROM access_requests")[0][0]
    parent = env.logged_in()
    parent.environ_base["HTTP_X_CSRF_TOKEN"] = page_csrf(parent)
    assert parent.post(f"/api/requests/{request_id}/approve", json={"minutes": 30}).status_code == 200
    rows = parent.get("/api/devices/kids-tablet/limits").get_json()
    assert next(r for r in rows if r["name"] == "youtube")["remaining_minutes"] == 30
    assert env.client(peer="192.168.1.23", base_url="http://www.youtube.com").get("/").status_code == 200


@pytest.mark.parametrize("payload", XSS_PAYLOADS)
def test_a_limit_name_in_the_url_is_never_echoed_raw(env, payload):
    parent = env.logged_in()
    parent.environ_base["HTTP_X_CSRF_TOKEN"] = page_csrf(parent)
    answer = parent.post(f"/api/devices/kids-tablet/limits/{payload}/extend", json={"minutes": 5})
    assert "<script>" not in answer.get_data(as_text=True) and "<img" not in answer.get_data(as_text=True)
