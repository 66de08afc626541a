"""The compiled index: what gets blocked, what never does, and files that must not break."""

from __future__ import annotations

import hashlib
import os
import random
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from filterd.lists.domains import ParsedList, parse_list
from filterd.lists.index import (
    MAX_LISTS,
    CorruptIndexError,
    DomainIndex,
    IndexList,
    compile_index,
    domain_key,
)

LISTS = Path(__file__).parent / "fixtures" / "lists"
REPO = Path(__file__).resolve().parents[1]
GAMBLING = REPO.parent / "shared" / "data" / "ut1" / "gambling.txt"


def index_of(tmp_path: Path, *lists: tuple[str, str, str]) -> DomainIndex:
    """Compile (id, category, list text) triples in order (bit 0, 1, …) and open the result."""
    path = tmp_path / "lists.idx"
    compile_index(
        [IndexList(list_id, category, parse_list(text)) for list_id, category, text in lists],
        path,
    )
    return DomainIndex.open(path)


def fixture_list(name: str, category: str = "test") -> IndexList:
    return IndexList(name, category, parse_list((LISTS / name).read_bytes()))


@pytest.fixture
def fixture_index(tmp_path: Path):
    path = tmp_path / "lists.idx"
    names = ["domains.txt", "hosts.txt", "adblock.txt", "sha256.txt"]
    compile_index([fixture_list(name) for name in names], path)
    index = DomainIndex.open(path)
    yield index
    index.close()


# ---------------------------------------------------------------- matching


def test_listed_domain_blocks_itself_and_every_subdomain(tmp_path: Path) -> None:
    with index_of(tmp_path, ("ads", "ads", "example.com\n")) as index:
        assert index.lookup("example.com") == 1
        assert index.lookup("www.example.com") == 1
        assert index.lookup("a.b.c.example.com") == 1
        assert index.lookup("example.org") == 0
        assert index.lookup("com") == 0


def test_look_alike_names_are_not_blocked(tmp_path: Path) -> None:
    with index_of(tmp_path, ("ads", "ads", "example.com\n")) as index:
        for name in ("notexample.com", "example.com.evil.net", "example.co", "xample.com",
                     "example.comm", "wwwexample.com", "example-com.net"):
            assert index.lookup(name) == 0, name


def test_query_case_and_trailing_dot_do_not_dodge_a_block(tmp_path: Path) -> None:
    with index_of(tmp_path, ("ads", "ads", "example.com\n")) as index:
        assert index.lookup("WWW.Example.COM.") == 1


def test_names_from_fixture_files_of_every_format_block_under_their_list_bit(fixture_index) -> None:
    index = fixture_index
    assert index.lookup("poker.example.net") == 0b0001
    assert index.lookup("www.xn--bcher-kva.de") == 0b1001  # plain IDN list and hashed list
    assert index.lookup("x.malware.example.net") == 0b0010
    assert index.lookup("x.tracker.example.com") == 0b0110  # hosts entry and ||example.com^
    assert index.lookup("ads.example.net") == 0b0100
    assert index.lookup("hidden-casino.test") == 0b1000
    assert index.lookup("localhost") == 0
    assert index.lookup("thirdparty.example") == 0  # its rule was too narrow to use


def test_several_lists_each_set_their_own_bit(tmp_path: Path) -> None:
    with index_of(
        tmp_path,
        ("gambling", "gambling", "casino.example\nshared.example\n"),
        ("adult", "adult", "shared.example\nadult.example\n"),
        ("social", "social", "chat.example\nshared.example\n"),
    ) as index:
        assert index.lookup("casino.example") == 0b001
        assert index.lookup("www.adult.example") == 0b010
        assert index.lookup("chat.example") == 0b100
        assert index.lookup("shared.example") == 0b111
        assert [info.id for info in index.lists] == ["gambling", "adult", "social"]
        assert [info.bit for info in index.lists] == [0, 1, 2]


def test_block_at_two_levels_reports_the_most_specific_suffix_per_list(tmp_path: Path) -> None:
    with index_of(
        tmp_path,
        ("broad", "ads", "example.com\n"),
        ("narrow", "ads", "ads.example.com\n"),
    ) as index:
        match = index.match("x.ads.example.com")
        assert match is not None
        assert match.mask == 0b11
        assert [(hit.list.id, hit.suffix) for hit in match.hits] == [
            ("broad", "example.com"),
            ("narrow", "ads.example.com"),
        ]
        assert index.match("example.org") is None


def test_match_and_lookup_always_agree(fixture_index) -> None:
    names = ["poker.example.net", "www.xn--bcher-kva.de", "x.tracker.example.com",
             "ok.example.com", "a.ok.example.com", "allowed.example", "hidden-casino.test",
             "sub.ads.example.net", "example.org", "com", "localhost"]
    for name in names:
        match = fixture_index.match(name)
        assert (match.mask if match else 0) == fixture_index.lookup(name), name


# ---------------------------------------------------------------- exceptions


ADBLOCK = "||example.com^\n@@||ok.example.com^\n"


def test_exception_allows_its_subtree_but_not_its_siblings(tmp_path: Path) -> None:
    with index_of(tmp_path, ("ads", "ads", ADBLOCK)) as index:
        assert index.lookup("ok.example.com") == 0
        assert index.lookup("deep.ok.example.com") == 0
        assert index.lookup("ads.example.com") == 1
        assert index.lookup("example.com") == 1
        assert index.lookup("notok.example.com") == 1


def test_exception_for_the_blocked_domain_itself_wins(tmp_path: Path) -> None:
    with index_of(tmp_path, ("ads", "ads", "||example.com^\n@@||example.com^\n")) as index:
        assert index.lookup("example.com") == 0
        assert index.lookup("www.example.com") == 0


def test_block_more_specific_than_an_exception_still_applies(tmp_path: Path) -> None:
    with index_of(tmp_path, ("ads", "ads", "@@||example.com^\n||ads.example.com^\n")) as index:
        assert index.lookup("ads.example.com") == 1
        assert index.lookup("www.example.com") == 0


def test_exception_only_clears_the_list_that_has_it(tmp_path: Path) -> None:
    with index_of(
        tmp_path,
        ("adblock", "ads", ADBLOCK),
        ("plain", "ads", "example.com\n"),
    ) as index:
        assert index.lookup("ok.example.com") == 0b10
        match = index.match("ok.example.com")
        assert match is not None and match.list_ids == ("plain",)


# ---------------------------------------------------------------- hashed lists


def test_hashed_list_blocks_domain_and_subdomain_without_storing_the_name(tmp_path: Path) -> None:
    path = tmp_path / "lists.idx"
    compile_index(
        [fixture_list("sha256.txt", "secret"),
         IndexList("plain", "ads", parse_list(b"clear-list-entry.example\n"))],
        path,
    )
    raw = path.read_bytes()
    for name in (b"hidden-casino", b"private.example", b"clear-list-entry"):
        assert name not in raw
    with DomainIndex.open(path) as index:
        assert index.lookup("hidden-casino.test") == 1
        assert index.lookup("www.hidden-casino.test") == 1
        assert index.lookup("a.b.private.example.org") == 1
        assert index.lookup("other-casino.test") == 0
        match = index.match("www.hidden-casino.test")
        assert match is not None
        assert [(hit.list.id, hit.suffix) for hit in match.hits] == [("sha256.txt", None)]
        plain = index.match("www.clear-list-entry.example")
        assert plain is not None and plain.hits[0].suffix == "clear-list-entry.example"


def test_plain_and_hashed_entries_of_one_name_share_one_key() -> None:
    digest = hashlib.sha256(b"example.com").digest()
    assert domain_key("example.com") == int.from_bytes(digest[:8], "big")


# ---------------------------------------------------------------- scale and real data


def test_thousands_of_names_from_overlapping_lists_all_match(tmp_path: Path) -> None:
    rng = random.Random(7)
    names = [f"site{rng.randrange(10**9)}.example{i % 7}.net" for i in range(20_000)]
    first, second = names[:12_000], names[8_000:]
    with index_of(
        tmp_path,
        ("first", "a", "\n".join(first)),
        ("second", "b", "\n".join(second)),
    ) as index:
        assert index.blocked_keys == len(set(names))
        for name in names[:8_000:97]:
            assert index.lookup(name) == 0b01
        for name in names[8_000:12_000:31]:
            assert index.lookup("www." + name) == 0b11
        for name in names[12_000::97]:
            assert index.lookup(name) == 0b10
        assert not any(index.lookup(f"absent{i}.example.net") for i in range(2_000))


@pytest.mark.skipif(not GAMBLING.exists(), reason="shared data folder not beside the repo")
def test_real_gambling_list_blocks_known_sites(tmp_path: Path) -> None:
    path = tmp_path / "lists.idx"
    parsed = parse_list(GAMBLING.read_bytes())
    stats = compile_index([IndexList("ut1-gambling", "gambling", parsed)], path)
    assert stats.blocked_keys > 30_000
    with DomainIndex.open(path) as index:
        for name in ("bet365.com", "www.pokerstars.com", "unibet.com", "m.winamax.fr",
                     "0-casino.info"):
            assert index.lookup(name) == 1, name
        for name in ("wikipedia.org", "www.example.com", "notbet365.com"):
            assert index.lookup(name) == 0, name
        assert index.lists[0].counts["domains"] == len(parsed.domains)


# ---------------------------------------------------------------- metadata and limits


def test_metadata_records_each_list_for_recompile_decisions(tmp_path: Path) -> None:
    path = tmp_path / "lists.idx"
    compile_index(
        [IndexList("gambling", "gambling", parse_list((LISTS / "adblock.txt").read_bytes()),
                   {"sha256": "abc123", "url": "https://lists.example/g.txt"})],
        path,
    )
    with DomainIndex.open(path) as index:
        assert index.meta["format_version"] == 2
        assert index.meta["built_at"]
        (info,) = index.lists
        assert (info.id, info.bit, info.category, info.format) == (
            "gambling", 0, "gambling", "adblock")
        assert info.counts == {"domains": 5, "exceptions": 2, "digests": 0, "invalid": 6,
                               "lines": 16, "kinds": {"domain": 1, "hosts": 0, "adblock": 4,
                                                      "exception": 2, "sha256": 0, "comment": 3,
                                                      "invalid": 6}}
        assert info.extra == {"sha256": "abc123", "url": "https://lists.example/g.txt"}


def test_index_file_is_readable_by_a_daemon_running_as_another_user(tmp_path: Path) -> None:
    path = tmp_path / "lists.idx"
    compile_index([fixture_list("domains.txt")], path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_sixty_four_lists_fit_and_the_last_bit_works(tmp_path: Path) -> None:
    lists = [(f"l{i}", "c", f"site{i}.example\n") for i in range(MAX_LISTS)]
    with index_of(tmp_path, *lists) as index:
        assert index.lookup("site63.example") == 1 << 63
        assert index.lookup("site0.example") == 1


def test_more_than_sixty_four_lists_is_refused(tmp_path: Path) -> None:
    lists = [IndexList(f"l{i}", "c", ParsedList("domains")) for i in range(MAX_LISTS + 1)]
    with pytest.raises(ValueError, match="65 lists given but an index holds at most 64"):
        compile_index(lists, tmp_path / "lists.idx")


def test_duplicate_list_ids_are_refused(tmp_path: Path) -> None:
    lists = [IndexList("same", "c", ParsedList("domains")) for _ in range(2)]
    with pytest.raises(ValueError, match="repeated: same"):
        compile_index(lists, tmp_path / "lists.idx")


def test_no_lists_make_an_index_that_blocks_nothing(tmp_path: Path) -> None:
    path = tmp_path / "lists.idx"
    compile_index([], path)
    with DomainIndex.open(path) as index:
        assert index.lookup("example.com") == 0
        assert index.match("example.com") is None
        assert index.lists == ()
    empty = DomainIndex.empty()
    assert empty.lookup("example.com") == 0
    assert empty.match("example.com") is None
    empty.close()


def test_lookup_on_a_closed_index_raises_rather_than_allowing(tmp_path: Path) -> None:
    index = index_of(tmp_path, ("ads", "ads", "example.com\n"))
    index.close()
    with pytest.raises(ValueError, match="closed"):
        index.lookup("example.com")


# ---------------------------------------------------------------- damaged files


@pytest.fixture
def good_index(tmp_path: Path) -> Path:
    path = tmp_path / "lists.idx"
    compile_index([fixture_list("domains.txt")], path)
    return path


def test_truncated_file_is_a_clear_error(good_index: Path) -> None:
    raw = good_index.read_bytes()
    for size in (0, 10, 127, 200, len(raw) - 1):
        good_index.write_bytes(raw[:size])
        with pytest.raises(CorruptIndexError, match="truncated"):
            DomainIndex.open(good_index)


def test_damaged_byte_is_caught_by_the_checksum(good_index: Path) -> None:
    raw = bytearray(good_index.read_bytes())
    raw[200] ^= 0x01
    good_index.write_bytes(bytes(raw))
    with pytest.raises(CorruptIndexError, match="checksum"):
        DomainIndex.open(good_index)


def test_any_damaged_header_byte_is_refused_or_harmless(good_index: Path) -> None:
    raw = good_index.read_bytes()
    for offset in range(128):
        damaged = bytearray(raw)
        damaged[offset] ^= 0x10
        good_index.write_bytes(bytes(damaged))
        try:
            index = DomainIndex.open(good_index)
        except CorruptIndexError:
            continue
        with index:  # only padding bytes may change without notice
            assert index.lookup("poker.example.net") == 1
            assert index.lookup("example.org") == 0


def test_a_file_that_is_not_an_index_is_named_as_such(good_index: Path) -> None:
    good_index.write_bytes(b"example.com\n" * 100)
    with pytest.raises(CorruptIndexError, match="not a filterd index"):
        DomainIndex.open(good_index)


def test_a_missing_file_is_the_usual_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        DomainIndex.open(tmp_path / "absent.idx")


# ---------------------------------------------------------------- atomic writes


class ExplodingNames(set):
    """A list that fails half way through, like a source that cannot be read to the end."""

    def __iter__(self):
        yield "first.example"
        raise OSError("source vanished")


def test_failed_compile_keeps_the_previous_index(good_index: Path) -> None:
    before = good_index.read_bytes()
    broken = ParsedList("domains", domains=ExplodingNames({"first.example", "second.example"}))
    with pytest.raises(OSError, match="source vanished"):
        compile_index([fixture_list("hosts.txt"), IndexList("broken", "c", broken)], good_index)
    assert good_index.read_bytes() == before
    assert sorted(p.name for p in good_index.parent.iterdir()) == ["lists.idx"]
    with DomainIndex.open(good_index) as index:
        assert index.lookup("poker.example.net") == 1


def test_failure_while_writing_keeps_the_previous_index(
    good_index: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = good_index.read_bytes()

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        compile_index([fixture_list("hosts.txt")], good_index)
    monkeypatch.undo()
    assert good_index.read_bytes() == before
    assert sorted(p.name for p in good_index.parent.iterdir()) == ["lists.idx"]


def test_metadata_that_is_not_json_is_refused_before_writing(good_index: Path) -> None:
    before = good_index.read_bytes()
    item = fixture_list("hosts.txt")
    item.extra = {"fetched": object()}
    with pytest.raises(ValueError, match="JSON-serialisable"):
        compile_index([item], good_index)
    assert good_index.read_bytes() == before


def test_recompiling_replaces_the_index_while_an_open_one_keeps_working(good_index: Path) -> None:
    with DomainIndex.open(good_index) as old:
        compile_index([fixture_list("hosts.txt")], good_index)
        assert old.lookup("poker.example.net") == 1  # still the old mapping
        with DomainIndex.open(good_index) as new:
            assert new.lookup("poker.example.net") == 0
            assert new.lookup("ads.example.com") == 1


# ---------------------------------------------------------------- sharing between processes


def test_two_processes_open_the_same_index(good_index: Path) -> None:
    script = (
        "import sys\n"
        "from filterd.lists.index import DomainIndex\n"
        "with DomainIndex.open(sys.argv[1]) as index:\n"
        "    print(index.lookup('www.poker.example.net'), index.lookup('example.org'))\n"
    )
    with DomainIndex.open(good_index) as index:
        children = [
            subprocess.run([sys.executable, "-c", script, str(good_index)],
                           capture_output=True, text=True, check=True, cwd=REPO)
            for _ in range(2)
        ]
        assert index.lookup("www.poker.example.net") == 1
    assert [child.stdout.split() for child in children] == [["1", "0"], ["1", "0"]]


# ---------------------------------------------------------------- size


def test_an_index_costs_at_most_eight_bytes_a_domain(tmp_path: Path) -> None:
    names = [f"site{i}.example{i % 7}.test" for i in range(200_000)]
    path = tmp_path / "lists.idx"
    stats = compile_index([IndexList("big", "adult", parse_list("\n".join(names))),
                           IndexList("overlap", "adult", parse_list("\n".join(names[::10])))], path)
    assert stats.blocked_keys == 200_000
    assert stats.size_bytes / 200_000 <= 8
    with DomainIndex.open(path) as index:
        assert index.lookup("www.site12345.example4.test") == 0b01
        assert index.lookup("site10.example3.test") == 0b11
        assert index.lookup("site10.example4.test") == 0
        assert sum(1 for name in names if index.lookup(name)) == 200_000
        counts = {info.id: info.counts["domains"] for info in index.lists}
        assert counts == {"big": 200_000, "overlap": 20_000}
