"""webui/profile_form.py: the child's page's form, from a profile and from what was posted."""
from __future__ import annotations

from werkzeug.datastructures import MultiDict

from filterd.rules.config import parse_config
from filterd.rules.model import DAYS
from webui import profile_form


def parsed(body: dict):
    """A profile as the daemon reads it (what write() measures "unchanged" against)."""
    return parse_config({"dns": {"upstreams": ["udp://127.0.0.1"]}, "profiles": {"kids": body},
                         "default_profile": "kids"}, {}).rules.profiles["kids"]


def test_names_typed_by_parents_become_ids_and_odd_ones_are_refused():
    assert profile_form.profile_id("Leo") == "leo"
    assert profile_form.profile_id("  Mia Rose ") == "mia-rose"
    assert profile_form.profile_id("Zoë") == ""             # refused on the page, never mangled
    assert profile_form.profile_id("<b>x</b>") == ""
    assert profile_form.person("new-devices") == "New devices"
    assert profile_form.person("emma") == "Emma"


def test_day_choices_are_recognised_and_written_as_days():
    assert profile_form.ScheduleRow(days=("sun", "mon", "tue", "wed", "thu")).day_choice == "school_nights"
    assert profile_form.ScheduleRow(days=DAYS).day_choice == "daily"
    assert profile_form.ScheduleRow(days=("mon", "wed")).day_choice == "custom"
    form = MultiDict({"schedule_count": "2", "schedule-0-name": "bedtime", "schedule-0-days": "school_nights",
                      "schedule-0-start": "21:00", "schedule-0-end": "07:00", "schedule-0-what": "all",
                      "schedule-1-name": "homework", "schedule-1-days": "custom", "schedule-1-wed": "on",
                      "schedule-1-start": "16:00", "schedule-1-end": "18:00", "schedule-1-what": "some"})
    form.setlist("schedule-1-item", ["games", "youtube"])
    editor = profile_form.from_form(form)
    body: dict = {"bypass_protection": True}
    profile_form.write(editor, body, parsed(dict(body)))
    assert body["schedules"] == [
        {"name": "bedtime", "days": ["sun", "mon", "tue", "wed", "thu"], "start": "21:00", "end": "07:00", "block": "all"},
        {"name": "homework", "days": ["wed"], "start": "16:00", "end": "18:00", "block": ["games", "youtube"]}]
    assert body["bypass_protection"] is True                # what the page does not edit stays


def test_a_preset_profile_keeps_following_its_preset_and_an_unchanged_week_is_not_rewritten():
    body = {"preset": "child", "schedules": [{"name": "bedtime", "days": ["sun", "mon", "tue", "wed", "thu"],
                                              "start": "21:00", "end": "07:00", "block": "all"}]}
    current = parsed(dict(body))
    editor = profile_form.from_profile(current)
    editor.categories = tuple(c for c in editor.categories if c != "social_networks") + ("games",)
    written = dict(body)
    profile_form.write(editor, written, current)
    assert written["block_categories_add"] == ["games"] and written["block_categories_remove"] == ["social_networks"]
    assert "block_categories" not in written and "safesearch" not in written and "youtube" not in written
    assert written["schedules"] is body["schedules"]        # the same nights in DAYS order: not rewritten
    assert profile_form.preset_changes(parsed(written), parse_config(
        {"dns": {"upstreams": ["udp://127.0.0.1"]}, "profiles": {"kids": {}}}, {}).catalog) == \
        ["+ Games blocked", "− Social networks allowed"]


def test_a_config_error_finds_its_row_even_after_a_removed_one():
    form = MultiDict({"schedule_count": "2", "schedule-0-name": "old", "schedule-0-delete": "on",
                      "schedule-0-start": "1:00", "schedule-0-end": "2:00",
                      "schedule-1-name": "new", "schedule-1-start": "25:00", "schedule-1-end": "07:00"})
    editor = profile_form.from_form(form)
    # schedules[0] in the written config is the page's row 1: row 0 was removed.
    assert profile_form.field_of("profiles.kids.schedules[0].start", "kids", editor) == "schedule-1"
    assert profile_form.field_of("profiles.kids.block_services[0]", "kids", editor) == "apps"
    assert profile_form.field_of("timezone", "kids", editor) == "form"
    assert profile_form.problems(editor) == {}
