"""The child's side (block page: why, when, "ask") and the parent's side (/requests, the home
page's cards, the API) of access requests, through the Flask test client on real files."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from filterd.store import overrides
from webui_fixtures import BASE_URL, Env, XSS_PAYLOADS, csrf_from, page_csrf

CONFIG = """\
# Our house
timezone: UTC
data_dir: {data_dir}
dns:
  listen: ["127.0.0.1:5353"]
  upstreams: ["udp://127.0.0.1:1"]
web:
  listen: "127.0.0.1:8080"
  address: 192.168.1.2
  hostnames: [filter.home]
profiles:
  kids:   # Emma
    preset: child
    block: [games.example, gamecdn.example]
  night:
    preset: child
    block: [casino.example]
    schedules:
      - {{name: bedtime, days: [mon, tue, wed, thu, fri, sat, sun], start: "00:00", end: "23:59", block: all}}
      - {{name: bedtime, days: [mon, tue, wed, thu, fri, sat, sun], start: "23:59", end: "00:00", block: all}}
  adults:
    preset: adult
devices:
  - {{name: kids-tablet, ip: 192.168.1.23, profile: kids}}
  - {{name: dad-phone, ip: 192.168.1.24, profile: adults}}
  - {{name: sleepy, ip: 192.168.1.25, profile: night}}
default_profile: kids
"""

TABLET, DAD, SLEEPY, UNNAMED = "192.168.1.23", "192.168.1.24", "192.168.1.25", "192.168.1.77"


@pytest.fixture
def env(tmp_path) -> Env:
    environment = Env(tmp_path, CONFIG.format(data_dir=tmp_path / "var"))
    environment.set_password()
    return environment


@pytest.fixture
def admin(env):
    return env.logged_in()


def child(env, peer: str = TABLET, host: str = "www.games.example"):
    return env.client(peer=peer, base_url=f"http://{host}")


def page(client, path: str = "/"):
    response = client.get(path)
    return response, response.get_data(as_text=True)


def ask(client, message: str = "", path: str = "/"):
    _, html = page(client, path)
    token = re.search(r'name="token" value="([0-9a-f]+)"', html)
    assert token, "no ask form on the block page"
    return client.post(path, data={"token": token.group(1), "message": message})


def pending_ids(env) -> list[int]:
    return [row[0] for row in env.query("SELECT id FROM access_requests WHERE status = 'pending' ORDER BY id")]


# ---------------------------------------------------------------- the child's block page


def test_block_page_shows_the_site_the_devices_reason_and_an_ask_form(env):
    response, html = page(child(env))
    assert response.status_code == 403
    assert "www.games.example" in html and "Your parents have blocked this site." in html
    assert "Ask a parent for access" in html
    # Nothing that helps a bypass: no list, profile or setting names.
    assert "kids" not in html.lower() and "block list" not in html and "csrf-token" not in html


def test_the_same_site_is_not_blocked_for_a_device_whose_profile_allows_it(env):
    response, html = page(child(env, DAD))
    assert response.status_code == 200 and "is not blocked" in html and "Ask a parent" not in html


def test_at_bedtime_the_page_says_when_it_opens_and_offers_to_ask_for_more_time(env):
    response, html = page(child(env, SLEEPY, "minecraft.net"))
    assert response.status_code == 403
    assert "bedtime" in html and "It opens again at" in html and "Ask for more time" in html


def test_at_bedtime_a_site_blocked_anyway_says_it_stays_blocked_after_bedtime(env):
    """Waiting or more time will not open it: the child reads so, and no 'opens again at'."""
    response, html = page(child(env, SLEEPY, "casino.example"))
    assert response.status_code == 403 and "bedtime" in html
    assert "After bedtime, this site stays blocked: your parents have blocked this site." in html
    assert "It opens again at" not in html
    _, plain = page(child(env, SLEEPY, "minecraft.net"))
    assert "stays blocked" not in plain and "It opens again at" in plain


def test_asking_files_one_request_and_the_reloaded_page_says_it_was_sent(env):
    client = child(env)
    response = ask(client, "for my homework project", path="/some/page?x=1")
    assert response.status_code == 303 and response.headers["Location"].endswith("/some/page?x=1")
    rows = env.query("SELECT device, domain, message, unblocks, status, client FROM access_requests")
    assert rows == [("kids-tablet", "www.games.example", "for my homework project", "games.example", "pending",
                     TABLET)]
    _, html = page(client)
    assert "You asked at" in html and "A parent will answer soon" in html
    assert 'name="token"' not in html          # no second form while one request waits


def test_asking_without_the_pages_token_files_nothing(env):
    client = child(env)
    response = client.post("/", data={"token": "0" * 32, "message": "hi"})
    assert response.status_code == 403 and "try again" in response.get_data(as_text=True)
    response = client.post("/", data={"message": "hi"})
    assert response.status_code == 403
    assert pending_ids(env) == []


def test_a_new_request_is_queued_for_the_parents_phone_and_a_merged_one_is_not(tmp_path):
    """The block page hands the request to the notification outbox (sent by the web UI's worker)."""
    import json

    text = CONFIG.format(data_dir=tmp_path / "var") + (
        "notify:\n  channels: {phone: {type: ntfy, url: 'https://ntfy.example/our-topic'}}\n"
        "  events: {access_request: [phone]}\n")
    env = Env(tmp_path, text)
    ask(child(env), "for homework")
    # Asking again (a second tab still showing the form) merges: no second notification.
    import time

    from webui.blockpage import ask_token
    token = ask_token(TABLET, "www.games.example", int(time.time() // 3600))
    assert child(env).post("/", data={"token": token, "message": "please"}).status_code == 303
    rows = env.query("SELECT event, channel, payload FROM notifications")
    assert [(event, channel) for event, channel, _ in rows] == [("access_request", "phone")]
    payload = json.loads(rows[0][2])
    assert payload["device"] == "kids-tablet" and payload["domain"] == "www.games.example"
    assert payload["message"] == "for homework" and payload["request_id"] == pending_ids(env)[0]
    assert env.query("SELECT asks FROM access_requests") == [(2,)]


def test_a_token_from_another_device_or_site_does_not_work(env):
    _, html = page(child(env))
    token = re.search(r'name="token" value="([0-9a-f]+)"', html).group(1)
    assert child(env, UNNAMED).post("/", data={"token": token}).status_code == 403
    assert child(env, host="other.games.example").post("/", data={"token": token}).status_code == 403
    assert pending_ids(env) == []


def test_a_foreign_origin_cannot_file_a_request(env):
    client = child(env)
    _, html = page(client)
    token = re.search(r'name="token" value="([0-9a-f]+)"', html).group(1)
    response = client.post("/", data={"token": token}, headers={"Origin": "http://evil.example"})
    assert response.status_code == 403 and pending_ids(env) == []


def test_the_hourly_limit_is_explained_to_the_child(env):
    client_for = lambda n: child(env, host=f"s{n}.games.example")  # noqa: E731
    for n in range(10):
        assert ask(client_for(n)).status_code == 303
    response = ask(client_for(10))
    assert response.status_code == 403
    assert "a lot of sites this hour" in response.get_data(as_text=True)
    assert len(pending_ids(env)) == 10


def test_an_unnamed_device_can_ask_and_is_known_by_its_address(env):
    assert ask(child(env, UNNAMED)).status_code == 303
    assert env.query("SELECT device, client FROM access_requests") == [("", UNNAMED)]
    _, html = page(child(env, "192.168.1.78"))
    assert "Ask a parent for access" in html          # another unnamed device has not asked


def test_the_protected_category_gets_a_neutral_page_with_no_form_and_nothing_is_stored(tmp_path):
    """A csam-listed name: neither shown, nor askable, nor recorded, even when posted to."""
    from filterd.lists import sources
    from filterd.rules.config import load_config

    csam = Path(__file__).parent / "fixtures" / "policy" / "csam.sha256"
    text = CONFIG.format(data_dir=tmp_path / "var").replace(
        "default_profile: kids", f"default_profile: kids\nlists:\n  - {{id: fx-csam, path: {csam}, "
                                 "category: csam, format: sha256}")
    env = Env(tmp_path, text)
    sources.ensure_compiled(load_config(env.config_path))
    client = child(env, host="csam-listed.test")
    response, html = page(client, "/some/path")
    assert response.status_code == 403
    assert "This page is blocked" in html and "csam-listed" not in html
    assert 'name="token"' not in html and "Ask" not in html
    posted = client.post("/", data={"token": "0" * 32, "message": "please"})
    assert "csam-listed" not in posted.get_data(as_text=True)
    assert env.query("SELECT count(*) FROM access_requests") == [(0,)]


# ---------------------------------------------------------------- the parent's answers


def test_requests_page_lists_pending_requests_with_the_childs_words_escaped(env, admin):
    for payload in XSS_PAYLOADS:
        ask(child(env, host=f"x{len(payload)}.games.example"), payload)
    response, html = page(admin, "/requests")
    assert response.status_code == 200
    for payload in XSS_PAYLOADS:
        assert payload not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "kids-tablet" in html and "x25.games.example" in html


def test_approving_for_an_hour_from_the_home_page_opens_the_site_for_that_device_only(env, admin):
    ask(child(env))
    response, html = page(admin, "/")
    assert "Waiting for your answer" in html and "www.games.example" in html
    request_id = pending_ids(env)[0]
    response = admin.post(f"/requests/{request_id}/approve",
                          data={"csrf_token": csrf_from(html), "for": "60", "back": "dashboard"})
    assert response.status_code == 303 and response.headers["Location"].endswith("/")
    assert env.query("SELECT status FROM access_requests") == [("approved",)]
    active = overrides.active(env.db(), __import__("time").time())
    assert [(o.kind, o.subject, o.value) for o in active] == [("allow", "kids-tablet", "games.example")]
    # The child's reload: open now, and the answer.
    response, text = page(child(env))
    assert response.status_code == 200 and "is not blocked" in text and "A parent said yes until" in text
    # Another device of the same profile is still blocked.
    assert page(child(env, UNNAMED))[0].status_code == 403


def refused(env, name: str, ago_s: float, rule: str = "profile_block", category: str | None = None,
            device: str = "kids-tablet", client: str = TABLET) -> None:
    """A refusal in the query log, as the daemon writes it."""
    env.execute("INSERT INTO queries (ts, device, client, name, qtype, action, rule, category, rcode, latency_ms,"
                " profile) VALUES (?, ?, ?, ?, 1, 'block', ?, ?, 0, 1.0, 'kids')",
                (__import__("time").time() - ago_s, device, client, name, rule, category))


def test_an_opened_site_that_still_misses_a_name_offers_one_more_request_in_one_tap(env, admin):
    """The child's reload after a yes: the site is open, and what its page still could not load
    (refused around it, still blocked) is listed with one button that asks for it."""
    ask(child(env))
    _, html = page(admin, "/")
    admin.post(f"/requests/{pending_ids(env)[0]}/approve", data={"csrf_token": csrf_from(html), "for": "60"})
    refused(env, "static.gamecdn.example", 5)                    # the page's CDN: still blocked
    refused(env, "www.games.example", 4)                          # the site itself: open now
    refused(env, "old.tracker.example", 3)                        # refused then, allowed now
    refused(env, "abuse.example", 2, rule="category", category="csam")    # never offered
    refused(env, "other.gamecdn.example", 2, device="dad-phone", client=DAD)   # another device's
    client = child(env)
    response, text = page(client)
    assert response.status_code == 200 and "is not blocked" in text
    missing = text[text.index("still blocked"):]
    assert "static.gamecdn.example" in missing and "Ask for it too" in missing
    for name in ("old.tracker.example", "abuse.example", "other.gamecdn.example"):
        assert name not in text, name
    token = re.search(r'name="token" value="([0-9a-f]+)"', missing).group(1)
    response = client.post("/", data={"token": token, "also": "1"})
    assert response.status_code == 303
    assert env.query("SELECT domain, message, status FROM access_requests WHERE status = 'pending'") == \
        [("static.gamecdn.example", "Needed by www.games.example: static.gamecdn.example", "pending")]
    _, text = page(client)
    assert "You asked at" in text and "Ask for it too" not in text   # asked once, not twice
    # A token of another site does not file one.
    assert client.post("/", data={"token": "0" * 32, "also": "1"}).status_code == 200
    assert len(pending_ids(env)) == 1


def test_a_request_card_offers_until_morning_with_its_day_and_time_and_no_bedtime_without_one(env, admin):
    import datetime
    ask(child(env))
    _, html = page(admin, "/requests")
    card = html[html.index('class="card request"'):]
    card = card[:card.index("</li>")]
    when = re.search(r'value="morning">Until (?:tomorrow|this) morning <span class="when">\((\w{3} 07:00)\)', card)
    assert when, card
    assert 'value="bedtime"' not in card and "midnight" not in card      # the kids have no bedtime here
    request_id = pending_ids(env)[0]
    refused = admin.post(f"/requests/{request_id}/approve", data={"csrf_token": csrf_from(html), "for": "bedtime"},
                         follow_redirects=True).get_data(as_text=True)
    assert "has no bedtime" in refused and pending_ids(env) == [request_id]
    admin.post(f"/requests/{request_id}/approve", data={"csrf_token": csrf_from(html), "for": "morning"})
    (until,) = env.query("SELECT until FROM access_requests")[0]
    assert datetime.datetime.fromtimestamp(until, datetime.timezone.utc).strftime("%a %H:%M") == when.group(1)


def test_an_answered_approval_can_be_undone_from_the_requests_page(env, admin):
    ask(child(env))
    _, html = page(admin, "/requests")
    request_id = pending_ids(env)[0]
    admin.post(f"/requests/{request_id}/approve", data={"csrf_token": csrf_from(html), "for": "60"})
    assert page(child(env))[0].status_code == 200
    _, html = page(admin, "/requests")
    assert f'action="/requests/{request_id}/undo"' in html and "Undo" in html
    response = admin.post(f"/requests/{request_id}/undo", data={"csrf_token": csrf_from(html)}, follow_redirects=True)
    assert "Undone: www.games.example is blocked again for kids-tablet." in response.get_data(as_text=True)
    assert page(child(env))[0].status_code == 403                     # blocked again
    assert f'action="/requests/{request_id}/undo"' not in page(admin, "/requests")[1]
    audited = len(env.audit())
    again = admin.post(f"/requests/{request_id}/undo", data={"csrf_token": csrf_from(html)}, follow_redirects=True)
    assert "Nothing to undo" in again.get_data(as_text=True) and len(env.audit()) == audited


def test_approving_always_adds_the_domain_to_the_profiles_allow_list_keeping_comments(env, admin):
    ask(child(env))
    token = page_csrf(admin, "/requests")
    admin.post(f"/requests/{pending_ids(env)[0]}/approve", data={"csrf_token": token, "for": "always"})
    text = env.config_text()
    assert "# Our house" in text and "# Emma" in text
    assert re.search(r"allow:\s*\n?\s*-? ?\[?games\.example", text), text
    assert env.query("SELECT status, until FROM access_requests") == [("approved", None)]
    assert page(child(env))[0].status_code == 200
    # Undo of "always" takes the entry it added off the allow list, and nothing else.
    token = page_csrf(admin, "/requests")
    response = admin.post(f"/requests/{env.query('SELECT id FROM access_requests')[0][0]}/undo",
                          data={"csrf_token": token}, follow_redirects=True)
    assert "is off the kids profile&#39;s allowed sites" in response.get_data(as_text=True)
    import yaml
    kids = yaml.safe_load(env.config_text())["profiles"]["kids"]
    assert "games.example" not in (kids.get("allow") or []) and kids["block"] == ["games.example", "gamecdn.example"]
    assert "# Our house" in env.config_text()
    assert page(child(env))[0].status_code == 403


def test_more_time_at_bedtime_is_bonus_time_and_cannot_be_always(env, admin):
    ask(child(env, SLEEPY, "minecraft.net"))
    request_id = pending_ids(env)[0]
    token = page_csrf(admin, "/requests")
    html = admin.get("/requests").get_data(as_text=True)
    assert 'value="always"' not in html
    admin.post(f"/requests/{request_id}/approve", data={"csrf_token": token, "for": "always"})
    assert env.query("SELECT status FROM access_requests") == [("pending",)]
    admin.post(f"/requests/{request_id}/approve", data={"csrf_token": token, "for": "15"})
    kinds = [(o.kind, o.subject) for o in overrides.active(env.db(), __import__("time").time())]
    assert kinds == [("bonus", "sleepy")]
    assert page(child(env, SLEEPY, "minecraft.net"))[0].status_code == 200


def test_declining_with_a_word_back_shows_it_to_the_child_who_must_wait_an_hour(env, admin):
    ask(child(env))
    token = page_csrf(admin, "/requests")
    admin.post(f"/requests/{pending_ids(env)[0]}/decline",
               data={"csrf_token": token, "answer": "ask me after homework"})
    response, html = page(child(env))
    assert response.status_code == 403
    assert "A parent said no" in html and "ask me after homework" in html and "You can ask again at" in html
    assert 'name="token"' not in html
    answered = admin.get("/requests").get_data(as_text=True)
    assert "declined" in answered and "ask me after homework" in answered


def test_answers_need_a_session_and_the_csrf_token(env, admin):
    ask(child(env))
    request_id = pending_ids(env)[0]
    anonymous = env.client()
    response = anonymous.post(f"/requests/{request_id}/approve", data={"for": "60"})
    assert response.status_code in (302, 303) and "/login" in response.headers["Location"]
    assert admin.post(f"/requests/{request_id}/approve", data={"for": "60"}).status_code == 400
    assert pending_ids(env) == [request_id]


# ---------------------------------------------------------------- the API


def test_api_lists_approves_and_declines_requests(env, admin):
    ask(child(env))
    ask(child(env, host="chess.games.example"))
    token = page_csrf(admin, "/")
    headers = {"X-CSRF-Token": token}
    listed = admin.get("/api/requests").get_json()
    assert [r["domain"] for r in listed] == ["chess.games.example", "www.games.example"]
    assert listed[0]["device"] == "kids-tablet" and listed[0]["status"] == "pending"
    first, second = listed[1]["id"], listed[0]["id"]
    response = admin.post(f"/api/requests/{first}/approve", json={"minutes": 15}, headers=headers)
    assert response.status_code == 200 and response.get_json()["request"]["status"] == "approved"
    response = admin.post(f"/api/requests/{second}/decline", json={"answer": "not now"}, headers=headers)
    assert response.get_json()["request"]["answer"] == "not now"
    assert admin.get("/api/requests").get_json() == []
    assert len(admin.get("/api/requests?status=answered").get_json()) == 2
    again = admin.post(f"/api/requests/{first}/approve", json={}, headers=headers)
    assert again.status_code == 400 and "already approved" in again.get_json()["error"]
    assert admin.post("/api/requests/999/decline", json={}, headers=headers).status_code == 404
    assert admin.get("/api/requests?status=nonsense").status_code == 400


def test_api_approves_until_the_morning_and_refuses_bedtime_for_a_child_without_one(env, admin):
    ask(child(env))
    headers = {"X-CSRF-Token": page_csrf(admin, "/")}
    request_id = pending_ids(env)[0]
    refused = admin.post(f"/api/requests/{request_id}/approve", json={"until": "bedtime"}, headers=headers)
    assert refused.status_code == 400 and "no bedtime" in refused.get_json()["error"]
    assert admin.post(f"/api/requests/{request_id}/approve", json={"until": "noon"}, headers=headers).status_code == 400
    approved = admin.post(f"/api/requests/{request_id}/approve", json={"until": "morning"}, headers=headers)
    assert approved.status_code == 200
    (until,) = env.query("SELECT until FROM access_requests")[0]
    assert __import__("time").gmtime(until)[3:6] == (7, 0, 0)          # the house is on UTC here


def test_api_requests_refuse_anonymous_callers(env):
    assert env.client().get("/api/requests").status_code == 401
    assert env.client().post("/api/requests/1/approve", json={}).status_code == 401


def test_block_page_is_served_to_the_child_not_the_admin_ui(env):
    response = child(env).get("/requests")
    assert response.status_code == 403 and "Access requests" not in response.get_data(as_text=True)
    assert BASE_URL.startswith("http://127.0.0.1")
