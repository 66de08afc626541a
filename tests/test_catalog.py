"""The shipped catalogs (categories, services, SafeSearch) and the loader that checks them."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from filterd.rules.catalog import (DEFAULT_CONFIG_DIR, ESSENTIAL_DOMAINS, Catalog, CatalogError,
                             essential_conflict, load_catalog)
from filterd.rules.config import ConfigError
from filterd.lists.domains import normalise_domain

CATEGORIES = ["adult", "gambling", "dating", "drugs", "violence_hate", "weapons", "social_networks",
              "games", "video_streaming", "chat", "anonymous_chat", "malware", "piracy", "bypass", "csam"]

BRANDS = ["youtube", "tiktok", "instagram", "snapchat", "facebook", "whatsapp", "discord", "roblox",
          "fortnite", "minecraft", "steam", "twitch", "netflix", "reddit", "twitter", "telegram",
          "pinterest", "spotify", "prime_video", "disney_plus", "kick", "character_ai", "chatgpt",
          "ometv", "chatroulette", "emerald_chat", "epic_games", "playstation", "xbox", "nintendo",
          "tumblr", "vimeo", "dailymotion", "hulu", "threads", "bereal", "linkedin", "signal", "skype"]

# No maintained public list of random-chat sites exists; UT1's chat list would break Microsoft 365.
SEED_ONLY = {"chat"}

# Names a family's everyday internet needs, beyond the loader's own ESSENTIAL_DOMAINS: no seed
# list or service may block them or anything above them.
EVERYDAY = ["www.google.com", "google.co.uk", "www.google.de", "mail.google.com", "accounts.google.com",
            "classroom.google.com", "docs.google.com", "play.google.com", "apple.com", "www.apple.com",
            "icloud.com", "www.icloud.com", "microsoft.com", "login.microsoftonline.com", "outlook.com",
            "teams.microsoft.com", "cloudflare.com", "amazon.com", "www.amazon.co.uk", "wikipedia.org",
            "en.wikipedia.org", "bbc.co.uk", "khanacademy.org", "zoom.us", "github.com", "yahoo.com",
            "www.bing.com", "duckduckgo.com", "gstatic.com", "fonts.gstatic.com", "googleapis.com",
            "fonts.googleapis.com", "akamaihd.net", "cloudfront.net", "amazonaws.com", "fbcdn-a.akamaihd.net"]


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog()


def covers(domain: str, name: str) -> bool:
    """Whether blocking `domain` blocks `name` (a domain covers its subdomains)."""
    return name == domain or name.endswith("." + domain)


def seed_lines(path: Path) -> list[tuple[int, str]]:
    return [(n, line.strip()) for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
            if line.strip() and not line.lstrip().startswith("#")]


# ---------------------------------------------------------------- the shipped catalog


def test_shipped_catalog_loads_without_problems(catalog):
    assert set(CATEGORIES) <= set(catalog.categories)
    assert len(catalog.services) >= 30
    assert catalog.safesearch.engines


def test_every_category_a_parent_picks_has_a_plain_description(catalog):
    for category_id in CATEGORIES:
        category = catalog.categories[category_id]
        assert category.name and category.description, category_id
        assert "\n" not in category.description and len(category.description) <= 120, category_id


def test_every_category_has_licensed_sources_or_is_seed_only_by_design(catalog):
    for category in catalog.categories.values():
        if category.id in SEED_ONLY:
            assert not category.sources and len(category.seed_domains) >= 20
            continue
        assert category.sources, category.id
        for source in category.sources:
            assert source.licence, source.id
            assert source.format in ("domains", "hosts", "adblock", "sha256"), source.id


def test_public_sources_are_https_downloads_of_known_list_projects(catalog):
    hosts = ("https://raw.githubusercontent.com/olbat/ut1-blacklists/master/blacklists/",
             "https://blocklistproject.github.io/Lists/alt-version/",
             "https://raw.githubusercontent.com/hagezi/dns-blocklists/main/domains/",
             "https://raw.githubusercontent.com/StevenBlack/hosts/master/alternates/",
             "https://raw.githubusercontent.com/Sinfonietta/hostfiles/master/",
             "https://raw.githubusercontent.com/ShadowWhisperer/BlockLists/master/Lists/")
    sources = [s for c in catalog.categories.values() if not c.protected for s in c.sources]
    sources += list(catalog.safesearch.unsupported_sources)
    assert len({s.id for s in sources}) == len(sources)
    for source in sources:
        addresses = source.urls or (source.parts,)
        assert source.url and source.url == addresses[0].replace("{n}", "0"), source.id
        assert all(url.startswith(hosts) for url in addresses), source.id
        assert source.path is None and source.format != "sha256", source.id
        assert source.approx_domains, source.id
    ut1 = [s for s in sources if "ut1-blacklists" in s.url]
    assert ut1 and all(s.licence == "CC BY-SA 4.0" for s in ut1)


def test_csam_is_the_only_protected_category_and_ships_no_domain(catalog):
    assert [c.id for c in catalog.categories.values() if c.protected] == ["csam"]
    csam = catalog.categories["csam"]
    assert not csam.seed_domains
    assert csam.seed is None or not seed_lines(csam.seed)
    shipped = DEFAULT_CONFIG_DIR / "lists" / "csam.txt"
    assert not shipped.exists() or not seed_lines(shipped)
    for source in csam.sources:
        assert source.format == "sha256" and source.url is None and source.path is not None


def test_every_seed_list_has_a_header_and_only_canonical_domains():
    files = sorted((DEFAULT_CONFIG_DIR / "lists").glob("*.txt"))
    assert {f.stem for f in files} >= set(CATEGORIES) - {"csam"}
    for path in files:
        assert path.read_text(encoding="utf-8").startswith("# "), f"{path.name} needs a header comment"
        lines = seed_lines(path)
        names = [text for _, text in lines]
        assert len(names) == len(set(names)), f"{path.name} repeats a domain"
        for number, text in lines:
            assert normalise_domain(text) == text, f"{path.name}:{number}: {text!r}"


def test_every_seed_list_blocks_a_few_dozen_best_known_names(catalog):
    for category in catalog.categories.values():
        if not category.protected:
            assert 30 <= len(category.seed_domains) <= 1000, category.id
    assert {"pornhub.com", "xvideos.com"} <= catalog.categories["adult"].seed_domains
    assert {"bet365.com", "stake.com"} <= catalog.categories["gambling"].seed_domains
    assert {"ome.tv", "chatroulette.com"} <= catalog.categories["anonymous_chat"].seed_domains


def test_bypass_blocks_resolvers_not_the_companies_behind_them(catalog):
    bypass = catalog.categories["bypass"].seed_domains
    for name in ("dns.google", "cloudflare-dns.com", "dns.quad9.net", "doh.opendns.com",
                 "dns.nextdns.io", "nordvpn.com", "torproject.org"):
        assert name in bypass, name
    assert any(covers(d, "mozilla.cloudflare-dns.com") for d in bypass)
    for name in ("google.com", "www.google.com", "cloudflare.com", "www.cloudflare.com", "apple.com",
                 "icloud.com", "www.icloud.com", "quad9.net", "opendns.com", "mozilla.org"):
        assert not any(covers(d, name) for d in bypass), name


def test_no_seed_list_or_service_blocks_everyday_essentials(catalog):
    blocked = {(c.id, d) for c in catalog.categories.values() for d in c.seed_domains}
    blocked |= {(s.id, d) for s in catalog.services.values() for d in s.domains}
    blocked |= {("safesearch", d) for d in catalog.safesearch.unsupported_domains}
    for owner, domain in blocked:
        for name in list(ESSENTIAL_DOMAINS) + EVERYDAY:
            assert not covers(domain, name), f"{owner}: {domain} would block {name}"


def test_essential_conflict_catches_shared_infrastructure_and_its_parents():
    for name in ("google.com", "akamaihd.net", "apple-dns.net", "icloud.com", "net", "com"):
        assert essential_conflict(name), name
    for name in ("gemini.google.com", "youtubei.googleapis.com", "mask.icloud.com", "tiktok.com",
                 "steamcdn-a.akamaihd.net"):
        assert essential_conflict(name) is None, name


def test_service_ids_and_categories_are_consistent(catalog):
    for service in catalog.services.values():
        assert service.category in catalog.categories, service.id
        assert not catalog.categories[service.category].protected
        assert service.id not in catalog.categories
        assert service.name and 1 <= len(service.icon) <= 3 and service.domains, service.id


def test_catalog_names_the_brands_parents_ask_for(catalog):
    assert len(catalog.services) >= 30
    missing = [b for b in BRANDS if b not in catalog.services]
    assert not missing
    assert catalog.services["twitter"].name.startswith("X")
    assert catalog.services["ometv"].category == "anonymous_chat"
    assert catalog.services["character_ai"].category == catalog.services["chatgpt"].category


def test_services_list_their_app_and_cdn_domains_not_only_the_website(catalog):
    tiktok = set(catalog.services["tiktok"].domains)
    assert {"tiktok.com", "tiktokv.com", "tiktokcdn.com", "tiktokcdn-us.com", "byteoversea.com",
            "ibytedtos.com", "ttwstatic.com", "musical.ly"} <= tiktok
    youtube = set(catalog.services["youtube"].domains)
    assert {"youtube.com", "youtu.be", "ytimg.com", "googlevideo.com", "youtube-nocookie.com",
            "youtubei.googleapis.com", "yt3.ggpht.com", "youtubekids.com"} <= youtube
    assert {"roblox.com", "rbxcdn.com"} <= set(catalog.services["roblox"].domains)
    assert {"discord.com", "discord.gg", "discordapp.com", "discordapp.net"} <= set(catalog.services["discord"].domains)
    assert {"snapchat.com", "sc-cdn.net"} <= set(catalog.services["snapchat"].domains)
    assert {"netflix.com", "nflxvideo.net"} <= set(catalog.services["netflix"].domains)


def test_services_are_grouped_by_category_in_catalog_order(catalog):
    games = catalog.services_in("games")
    assert {"roblox", "minecraft", "fortnite"} <= {s.id for s in games}
    assert all(s.category == "games" for s in games)
    assert catalog.services_in("csam") == ()


def test_a_domain_belongs_to_one_service(catalog):
    owners: dict[str, str] = {}
    for service in catalog.services.values():
        for domain in service.domains:
            assert domain not in owners, f"{domain}: {owners.get(domain)} and {service.id}"
            owners[domain] = service.id


def test_blocking_a_category_stops_its_services_apps_too(catalog):
    for service in catalog.services.values():
        seed = catalog.categories[service.category].seed_domains
        for domain in service.domains:
            assert any(covers(d, domain) for d in seed), f"{service.id}: {domain} not in the {service.category} seed"


# ---------------------------------------------------------------- SafeSearch


def google_country_domains(catalog) -> list[str]:
    google = next(e for e in catalog.safesearch.engines if e.id == "google")
    return sorted(h for h in google.hosts if not h.startswith("www."))


def test_google_lists_every_country_domain(catalog):
    countries = google_country_domains(catalog)
    assert len(countries) >= 180
    for name in ("google.com", "google.co.uk", "google.de", "google.fr", "google.com.au", "google.ca",
                 "google.co.jp", "google.com.br", "google.co.in", "google.es", "google.it", "google.nl",
                 "google.com.mx", "google.co.za", "google.ie", "google.co.nz", "google.cat"):
        assert name in countries, name


def test_each_google_country_domain_maps_to_forcesafesearch(catalog):
    for domain in google_country_domains(catalog):
        for host in (domain, "www." + domain):
            assert catalog.safesearch_target(host, "off") == "forcesafesearch.google.com", host


def test_google_services_other_than_search_are_not_rewritten(catalog):
    for host in ("mail.google.com", "docs.google.com", "classroom.google.com", "maps.google.co.uk",
                 "forcesafesearch.google.com"):
        assert catalog.safesearch_target(host, "strict") is None, host


def test_other_engines_map_to_their_documented_safe_hosts(catalog):
    assert catalog.safesearch_target("www.bing.com", "off") == "strict.bing.com"
    assert catalog.safesearch_target("bing.com", "off") == "strict.bing.com"
    for host in ("duckduckgo.com", "www.duckduckgo.com", "start.duckduckgo.com"):
        assert catalog.safesearch_target(host, "off") == "safe.duckduckgo.com"
    assert catalog.safesearch_target("yandex.ru", "off") == "familysearch.yandex.ru"
    assert catalog.safesearch_target("www.pixabay.com", "off") == "safesearch.pixabay.com"


@pytest.mark.parametrize("host", ["www.youtube.com", "m.youtube.com", "youtubei.googleapis.com",
                                  "youtube.googleapis.com", "www.youtube-nocookie.com"])
def test_youtube_levels_map_to_restricted_hosts(catalog, host):
    assert catalog.safesearch_target(host, "strict") == "restrict.youtube.com"
    assert catalog.safesearch_target(host, "moderate") == "restrictmoderate.youtube.com"
    assert catalog.safesearch_target(host, "off") is None


def test_safesearch_lookup_takes_names_as_they_arrive(catalog):
    assert catalog.safesearch_target("WWW.YouTube.com.", "strict") == "restrict.youtube.com"
    assert catalog.safesearch_target("www.Google.co.uk.", "off") == "forcesafesearch.google.com"


def test_search_off_leaves_engines_alone_but_keeps_youtube_level(catalog):
    assert catalog.safesearch_target("www.google.com", "strict", search=False) is None
    assert catalog.safesearch_target("www.youtube.com", "strict", search=False) == "restrict.youtube.com"


def test_unknown_youtube_level_is_refused(catalog):
    with pytest.raises(ValueError, match="youtube_level"):
        catalog.safesearch_target("www.youtube.com", "loose")


def test_engines_without_a_safe_mode_are_listed_for_blocking(catalog):
    unsupported = catalog.safesearch.unsupported_domains
    assert {"search.yahoo.com", "search.brave.com", "startpage.com"} <= unsupported
    assert not any(catalog.safesearch_target(d, "strict") for d in unsupported)


# ---------------------------------------------------------------- broken catalogs


@pytest.fixture
def config_copy(tmp_path) -> Path:
    """A writable copy of the shipped catalog: tmp/config/*.yaml and tmp/config/lists/."""
    folder = tmp_path / "config"
    folder.mkdir()
    for name in ("categories.yaml", "services.yaml", "safesearch.yaml"):
        shutil.copy(DEFAULT_CONFIG_DIR / name, folder / name)
    shutil.copytree(DEFAULT_CONFIG_DIR / "lists", folder / "lists")
    return folder


def edit_yaml(path: Path, change) -> None:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")


def problems_of(folder: Path) -> str:
    with pytest.raises(CatalogError) as caught:
        load_catalog(folder)
    return str(caught.value)


def test_the_copy_fixture_loads_like_the_original(config_copy):
    copy = load_catalog(config_copy)
    assert set(copy.categories) == set(load_catalog().categories)
    assert copy.categories["adult"].seed == config_copy / "lists" / "adult.txt"


def test_unknown_service_category_names_file_path_and_line(config_copy):
    edit_yaml(config_copy / "services.yaml", lambda d: d["services"][3].update(category="socal"))
    message = problems_of(config_copy)
    assert 'services.yaml: services[3].category: "socal" is not a category' in message
    assert "(line " in message


def test_catalog_error_is_a_config_error_listing_every_problem(config_copy):
    def break_two(data):
        data["services"][0]["category"] = "nope"
        data["services"][1]["domains"].append("not a domain")
    edit_yaml(config_copy / "services.yaml", break_two)
    with pytest.raises(ConfigError) as caught:
        load_catalog(config_copy)
    assert len(caught.value.problems) == 2
    assert "services[1].domains[" in str(caught.value)


def test_bad_seed_line_names_the_seed_file_and_line(config_copy):
    seed = config_copy / "lists" / "dating.txt"
    seed.write_text(seed.read_text() + "not a domain!\n")
    number = len(seed.read_text().splitlines())
    assert f'dating.txt:{number}: "not a domain!" is not a domain name' in problems_of(config_copy)


def test_essential_domain_in_a_seed_is_refused(config_copy):
    seed = config_copy / "lists" / "bypass.txt"
    seed.write_text(seed.read_text() + "google.com\n")
    assert "google.com" in problems_of(config_copy)
    seed.write_text(seed.read_text().replace("google.com\n", "com\n"))
    assert "top-level domain" in problems_of(config_copy)


def test_shared_infrastructure_in_a_service_is_refused(config_copy):
    edit_yaml(config_copy / "services.yaml", lambda d: d["services"][0]["domains"].append("googleapis.com"))
    message = problems_of(config_copy)
    assert "services[0].domains[" in message and "shared infrastructure" in message


def test_domain_in_two_services_is_refused(config_copy):
    edit_yaml(config_copy / "services.yaml", lambda d: d["services"][1]["domains"].append("tiktok.com"))
    assert 'is already listed by service "tiktok"' in problems_of(config_copy)


def test_protected_seed_with_domains_is_refused(config_copy):
    (config_copy / "lists" / "csam.txt").write_text("# test\nexample.org\n")

    def give_seed(data):
        csam = next(c for c in data["categories"] if c["id"] == "csam")
        csam["seed"] = "config/lists/csam.txt"
    edit_yaml(config_copy / "categories.yaml", give_seed)
    assert "protected category's seed must be empty" in problems_of(config_copy)


def test_duplicate_category_id_and_missing_licence_are_refused(config_copy):
    def break_it(data):
        data["categories"][1]["id"] = "adult"
        del data["categories"][2]["sources"][0]["licence"]
    edit_yaml(config_copy / "categories.yaml", break_it)
    message = problems_of(config_copy)
    assert 'categories[1].id: "adult" is already a category' in message
    assert "categories[2].sources[0]: is missing licence" in message


def test_source_needs_https(config_copy):
    def break_it(data):
        data["categories"][0]["sources"][1]["url"] = "http://example.org/list.txt"
        data["categories"][0]["sources"][0]["parts"] = "https://example.org/no-number.txt"
        data["categories"][1]["sources"][0]["urls"] = [data["categories"][1]["sources"][0].pop("url"),
                                                       "http://example.org/part.txt"]
    edit_yaml(config_copy / "categories.yaml", break_it)
    problems = problems_of(config_copy)
    assert "categories[0].sources[1].url" in problems
    assert "categories[0].sources[0].parts" in problems and "with {n} where" in problems
    assert "categories[1].sources[0].urls[1]" in problems


def test_a_list_split_in_parts_is_one_source_with_every_part(catalog):
    (adult,) = [s for s in catalog.categories["adult"].sources if s.id == "ut1-adult"]
    assert adult.parts.endswith("/blacklists/adult/domains.{n}") and adult.url.endswith("/adult/domains.0")


def test_host_rewritten_twice_is_refused(config_copy):
    edit_yaml(config_copy / "safesearch.yaml", lambda d: d["engines"][1]["hosts"].append("www.google.com"))
    assert '"www.google.com" is already rewritten for engine google' in problems_of(config_copy)


def test_invalid_yaml_and_missing_file_are_reported(config_copy):
    (config_copy / "safesearch.yaml").write_text("engines: [\n")
    (config_copy / "services.yaml").unlink()
    message = problems_of(config_copy)
    assert "safesearch.yaml: not valid YAML (line" in message
    assert "services.yaml: file not found" in message
