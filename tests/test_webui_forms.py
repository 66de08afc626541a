"""The wizard's and the new-profile form's validation: an error shows beside its field, the
parent's input is kept, and nothing is written."""
from __future__ import annotations

import re

from webui_fixtures import admin, env, page_csrf, version_from  # noqa: F401


def error_beside(html: str, field: str) -> str:
    match = re.search(rf'<(?:p|span) class="error" id="{field}-error" role="alert">([^<]*)</(?:p|span)>', html)
    assert match, f"no error beside {field}"
    return match.group(1)


def form_for(admin, path: str, **fields) -> dict:
    html = admin.get(path).get_data(as_text=True)
    return {"csrf_token": page_csrf(admin, path), "version": version_from(html), **fields}


def test_new_profile_with_a_bad_name_shows_the_error_beside_the_name(env, admin):
    before = env.config_text()
    response = admin.post("/profiles", data=form_for(admin, "/profiles", name="Emma Rose!", preset="child"))
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "letters and digits" in error_beside(html, "name")
    assert 'value="Emma Rose!"' in html          # what the parent typed, kept
    assert env.config_text() == before


def test_new_profile_with_a_taken_name_shows_the_error_beside_the_name(env, admin):
    before = env.config_text()
    html = admin.post("/profiles", data=form_for(admin, "/profiles", name="kids", preset="teen")).get_data(as_text=True)
    assert "exists already" in error_beside(html, "name")
    assert '<option value="teen" selected>' in html
    assert env.config_text() == before


def test_new_profile_with_an_unknown_preset_is_refused_beside_it(env, admin):
    before = env.config_text()
    html = admin.post("/profiles", data=form_for(admin, "/profiles", name="emma", preset="toddler")).get_data(as_text=True)
    assert "age groups" in error_beside(html, "preset")
    assert env.config_text() == before


def test_new_profile_on_an_outdated_page_is_refused(env, admin):
    form = form_for(admin, "/profiles", name="emma", preset="child")
    env.config_path.write_text(env.config_text() + "# edited by hand\n")
    html = admin.post("/profiles", data=form).get_data(as_text=True)
    assert "changed meanwhile" in html
    assert "emma" not in env.config_text()


def test_new_profile_is_created(env, admin):
    response = admin.post("/profiles", data=form_for(admin, "/profiles", name="emma", preset="child"))
    assert response.status_code == 302
    assert "emma:" in env.config_text()


def test_wizard_bad_time_zone_shows_beside_it_and_keeps_the_input(env, admin):
    before = env.config_text()
    response = admin.post("/setup/wizard", data=form_for(admin, "/setup/wizard", timezone="Mars/Olympus",
                                                         child="emma", preset="teen"))
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "not a time zone" in error_beside(html, "timezone")
    assert 'value="Mars/Olympus"' in html and 'value="emma"' in html
    assert 'value="teen" checked' in html
    assert env.config_text() == before


def test_wizard_bad_or_taken_child_name_shows_beside_it(env, admin):
    before = env.config_text()
    html = admin.post("/setup/wizard", data=form_for(admin, "/setup/wizard", timezone="UTC", child="<b>x</b>",
                                                     preset="child")).get_data(as_text=True)
    assert "letters and digits" in error_beside(html, "child")
    assert "<b>x</b>" not in html
    html = admin.post("/setup/wizard", data=form_for(admin, "/setup/wizard", timezone="UTC", child="kids",
                                                     preset="child")).get_data(as_text=True)
    assert "exists already" in error_beside(html, "child")
    assert env.config_text() == before


def test_wizard_saves_when_valid(env, admin):
    response = admin.post("/setup/wizard", data=form_for(admin, "/setup/wizard", timezone="Europe/Paris",
                                                         child="emma", preset="young_child"))
    assert response.status_code == 302
    assert "Europe/Paris" in env.config_text() and "emma:" in env.config_text()
