"""Age presets: they name only what the catalog has, a profile's own keys win over them, the
README's table says what they hold, and each has the effect a parent expects on well-known names
(decided against the shipped seed lists)."""
from __future__ import annotations

import datetime
import re
from pathlib import Path

import pytest
from dnslib import QTYPE

from filterd.lists import sources
from filterd.rules.catalog import load_catalog
from filterd.rules.config import load_config
from filterd.lists.index import DomainIndex
from filterd.rules.policy import ALLOW, BLOCK, NXDOMAIN, REWRITE, Policy, decide
from filterd.rules.presets import PRESETS

README = Path(__file__).resolve().parent.parent / "README.md"
PROFILE_KEYS = {"block_categories", "block_services", "safesearch", "youtube", "bypass_protection"}


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


def test_there_are_four_presets_from_youngest_to_adult():
    assert list(PRESETS) == ["young_child", "child", "teen", "adult"]


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_names_only_known_categories_and_services(catalog, preset):
    values = PRESETS[preset]
    assert set(values) <= PROFILE_KEYS
    assert set(values["block_categories"]) <= set(catalog.categories) - {"csam"}
    assert set(values["block_services"]) <= set(catalog.services)
    assert len(set(values["block_categories"])) == len(values["block_categories"])
    assert len(set(values["block_services"])) == len(values["block_services"])


def test_presets_get_stricter_with_younger_children():
    order = ["adult", "teen", "child", "young_child"]
    for older, younger in zip(order, order[1:]):
        assert set(PRESETS[older]["block_categories"]) <= set(PRESETS[younger]["block_categories"])
        assert set(PRESETS[older]["block_services"]) <= set(PRESETS[younger]["block_services"])
    for preset in ("young_child", "child", "teen"):
        assert "adult" in PRESETS[preset]["block_categories"]
        assert "bypass" in PRESETS[preset]["block_categories"]
        assert PRESETS[preset]["safesearch"] and PRESETS[preset]["bypass_protection"]


# ---------------------------------------------------------------- profiles with presets


def profile_config(tmp_path: Path, profiles: str) -> Path:
    path = tmp_path / "filterd.yaml"
    path.write_text(f"timezone: Europe/London\ndata_dir: {tmp_path / 'var'}\n"
                    f"dns: {{upstreams: ['udp://127.0.0.1:53']}}\nprofiles:\n{profiles}")
    return path


@pytest.mark.parametrize("preset", PRESETS)
def test_a_profile_with_only_a_preset_gets_the_presets_values(tmp_path, preset):
    profile = load_config(profile_config(tmp_path, f"  p: {{preset: {preset}}}\n")).rules.profiles["p"]
    values = PRESETS[preset]
    assert profile.preset == preset
    assert profile.block_categories == tuple(values["block_categories"])
    assert profile.block_services == tuple(values["block_services"])
    assert (profile.safesearch, profile.youtube, profile.bypass_protection) == \
        (values["safesearch"], values["youtube"], values["bypass_protection"])


@pytest.mark.parametrize("preset", PRESETS)
def test_every_key_set_in_the_profile_wins_over_the_preset(tmp_path, preset):
    profile = load_config(profile_config(tmp_path, (
        f"  p: {{preset: {preset}, block_categories: [games], block_services: [roblox], safesearch: false,\n"
        f"      youtube: moderate, bypass_protection: false, allow: [khanacademy.org]}}\n"))).rules.profiles["p"]
    assert profile.block_categories == ("games",)
    assert profile.block_services == ("roblox",)
    assert (profile.safesearch, profile.youtube, profile.bypass_protection) == (False, "moderate", False)
    assert profile.allow == ("khanacademy.org",)


def test_an_empty_list_in_the_profile_empties_the_presets(tmp_path):
    profile = load_config(profile_config(
        tmp_path, "  p: {preset: young_child, block_categories: [], block_services: []}\n")).rules.profiles["p"]
    assert (profile.block_categories, profile.block_services) == ((), ())
    assert profile.safesearch and profile.youtube == "strict"      # the rest still from the preset


def test_keys_left_out_come_from_the_preset(tmp_path):
    profile = load_config(profile_config(tmp_path, "  p: {preset: teen, youtube: strict}\n")).rules.profiles["p"]
    assert profile.youtube == "strict"
    assert profile.block_categories == tuple(PRESETS["teen"]["block_categories"])
    assert profile.safesearch is True


# ---------------------------------------------------------------- the README's table


def _words(text: str) -> str:
    text = re.sub(r"\(.*?\)|&|_|\band\b", " ", text)
    return " ".join(text.lower().split())


def readme_presets() -> dict[str, list[str]]:
    section = README.read_text().split("### Age presets", 1)[1]
    rows = {}
    for line in section.splitlines():
        match = re.match(r"\| `(\w+)` \|(.*)\|\s*$", line)
        if match:
            rows[match.group(1)] = [cell.strip() for cell in match.group(2).split("|")]
        elif rows and not line.startswith("|"):
            break
    return rows


def test_the_readme_table_matches_the_presets(catalog):
    table = readme_presets()
    assert list(table) == list(PRESETS)
    for preset, (categories, services, safesearch, youtube, bypass) in table.items():
        values = PRESETS[preset]
        assert sorted(_words(c) for c in categories.split(",")) == \
            sorted(_words(c) for c in values["block_categories"]), preset
        shown = [] if services in ("—", "-", "") else sorted(_words(s) for s in services.split(","))
        assert shown == sorted(_words(catalog.services[s].name) for s in values["block_services"]), preset
        assert safesearch == ("on" if values["safesearch"] else "off"), preset
        assert youtube == values["youtube"], preset
        assert bypass == ("on" if values["bypass_protection"] else "off"), preset


# ---------------------------------------------------------------- what each preset does

NOON = datetime.datetime(2026, 3, 3, 12, 0, tzinfo=datetime.timezone.utc)


@pytest.fixture(scope="module")
def presets_policy(tmp_path_factory) -> Policy:
    """One profile per preset, named after it, deciding against the seed lists."""
    folder = tmp_path_factory.mktemp("presets")
    config = load_config(profile_config(folder, "".join(f"  {p}: {{preset: {p}}}\n" for p in PRESETS)))
    index = DomainIndex.open(sources.ensure_compiled(config))
    yield Policy(config.rules, config.catalog, index, config.timezone)
    index.close()


B, A, N = BLOCK, ALLOW, NXDOMAIN
STRICT, MODERATE, SAFE = ("rewrite", "restrict.youtube.com"), ("rewrite", "restrictmoderate.youtube.com"), \
    ("rewrite", "forcesafesearch.google.com")

# name: (young_child, child, teen, adult)
EFFECTS = {
    "pornhub.com": (B, B, B, A),
    "www.bet365.com": (B, B, B, A),
    "tinder.com": (B, B, B, A),
    "thepiratebay.org": (B, B, B, A),
    "omegle.com": (B, B, B, A),
    "dns.google": (B, B, B, A),
    "bestgore.com": (B, B, B, A),
    "coinhive.com": (B, B, B, B),
    "www.tiktok.com": (B, B, A, A),
    "instagram.com": (B, B, A, A),
    "discord.com": (B, B, A, A),
    "web.whatsapp.com": (B, A, A, A),
    "netflix.com": (B, A, A, A),
    "chatgpt.com": (B, B, A, A),
    "character.ai": (B, B, B, A),
    "kick.com": (B, B, B, A),
    "roblox.com": (A, A, A, A),
    "en.wikipedia.org": (A, A, A, A),
    "www.youtube.com": (B, STRICT, MODERATE, A),
    "www.google.com": (SAFE, SAFE, SAFE, A),
    "www.google.co.uk": (SAFE, SAFE, SAFE, A),
    "use-application-dns.net": (N, N, N, A),
    "mask.icloud.com": (N, N, N, B if "bypass" in PRESETS["adult"]["block_categories"] else A),
}


@pytest.mark.parametrize("name", EFFECTS)
def test_preset_effect_on_well_known_names(presets_policy, name):
    seen = {}
    for preset in PRESETS:
        decision = decide(presets_policy, preset, name, QTYPE.A, NOON)
        seen[preset] = (decision.action, decision.target) if decision.action == REWRITE else decision.action
    assert tuple(seen.values()) == EFFECTS[name], {p: decide(presets_policy, p, name, QTYPE.A, NOON).reason
                                                  for p in PRESETS}
