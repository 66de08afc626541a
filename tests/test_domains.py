"""Reading block lists as a parent would hand them to us: real files, real mistakes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from filterd.lists.domains import (MAX_LINE_BYTES, LineParser, describe_kinds, detect_format, normalise_domain,
                                   parse_list)

LISTS = Path(__file__).parent / "fixtures" / "lists"


def read(name: str) -> bytes:
    return (LISTS / name).read_bytes()


# ---------------------------------------------------------------- normalise_domain


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("example.com", "example.com"),
        ("  Example.COM.  ", "example.com"),
        ("bücher.de", "xn--bcher-kva.de"),
        ("BÜCHER.de", "xn--bcher-kva.de"),
        ("xn--bcher-kva.de", "xn--bcher-kva.de"),
        ("例え。テスト", "xn--r8jz45g.xn--zckzah"),
        ("_dmarc.example.com", "_dmarc.example.com"),
        ("_dmarc.bücher.de", "_dmarc.xn--bcher-kva.de"),
        ("localhost", "localhost"),
        ("a1", "a1"),
        ("a" * 63 + ".com", "a" * 63 + ".com"),
    ],
)
def test_normalise_domain_gives_the_form_dns_queries_arrive_in(text: str, expected: str) -> None:
    assert normalise_domain(text) == expected
    assert normalise_domain(expected) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        ".",
        "example.com..",
        ".example.com",
        "bad..label.com",
        "*.example.com",
        "example.com/path",
        "http://example.com",
        "example.com:8080",
        "foo bar.com",
        "192.0.2.1",
        "10.0.0.1.",
        "::1",
        "2001:db8::1",
        "[2001:db8::1]",
        "123",
        "a" * 64 + ".com",
        ".".join(["abcdefghi"] * 26),  # 259 characters
        "caf\udcff.example",  # an undecodable byte, as parse_list hands it over
        "exa!mple.com",
    ],
)
def test_normalise_domain_rejects_what_is_not_a_domain(text: str) -> None:
    assert normalise_domain(text) is None


def test_idn_follows_idna2008_like_browsers_when_idna_is_installed() -> None:
    pytest.importorskip("idna")
    assert normalise_domain("faß.de") == "xn--fa-hia.de"  # IDNA 2003 would say fass.de


def test_name_of_exactly_253_characters_is_accepted() -> None:
    name = ".".join(["a" * 63] * 3 + ["b" * 61])
    assert len(name) == 253
    assert normalise_domain(name) == name
    assert normalise_domain(name + "b") is None


# ---------------------------------------------------------------- plain domain lists


def test_domain_list_keeps_valid_names_and_counts_each_bad_line() -> None:
    parsed = parse_list(read("domains.txt"))
    assert parsed.format == "domains"
    assert parsed.domains == {
        "casino-royal.example",
        "poker.example.net",
        "xn--bcher-kva.de",
        "_tracker.ads.example",
        "ads.example.org",
    }
    assert parsed.invalid == 6
    assert parsed.invalid_samples == [
        (10, "foo bar baz"),
        (11, "*.wildcard.example"),
        (12, "http://path.example/page"),
        (13, "host.example:8080"),
        (14, "192.0.2.10"),
    ]
    assert parsed.lines == 15
    assert parsed.exceptions == set() and parsed.digests == set()


def test_bom_crlf_undecodable_bytes_and_a_huge_line_are_survived() -> None:
    parsed = parse_list(read("domains_crlf_bom.txt"))
    assert parsed.format == "domains"
    assert parsed.domains == {"first.example", "second.example", "third.example"}
    assert parsed.invalid == 2
    (bad_bytes_line, bad_text), (huge_line, huge_text) = parsed.invalid_samples
    assert (bad_bytes_line, bad_text) == (4, "caf\ufffd.example")
    assert huge_line == 5
    assert huge_text.startswith("toolong.toolong.") and huge_text.endswith("…")
    assert len(huge_text) <= 60


def test_str_and_bytes_input_parse_alike() -> None:
    data = read("domains.txt")
    from_bytes = parse_list(data)
    from_str = parse_list(data.decode("utf-8"))
    assert from_str.domains == from_bytes.domains
    assert from_str.invalid_samples == from_bytes.invalid_samples


def test_line_longer_than_a_parse_chunk_is_skipped_and_numbering_stays_right() -> None:
    huge = b"x" * (3 << 20)  # three megabytes, no newline inside
    data = b"before.example\n" + huge + b"\nafter.example\nnot valid\n"
    parsed = parse_list(data, "domains")
    assert parsed.domains == {"before.example", "after.example"}
    assert parsed.invalid == 2
    assert parsed.invalid_samples[0] == (2, "x" * 30 + "… (3,145,728 bytes)")
    assert parsed.invalid_samples[1] == (4, "not valid")
    assert parsed.lines == 4


def test_many_lines_across_chunk_boundaries_lose_nothing() -> None:
    names = [f"site{i}.example" for i in range(120_000)]  # about 2 MB, several chunks
    names[100_000] = "not valid"
    parsed = parse_list("\n".join(names))  # no final newline
    assert len(parsed.domains) == 119_999
    assert parsed.invalid_samples == [(100_001, "not valid")]
    assert parsed.lines == 120_000


def test_summary_reads_like_a_sentence() -> None:
    assert parse_list(read("domains.txt")).summary() == (
        "5 domains, 6 invalid lines skipped (e.g. line 10: 'foo bar baz')"
    )
    many = parse_list("\n".join(f"n{i}.example" for i in range(1234)))
    assert many.summary() == "1,234 domains, no invalid lines"
    one_bad = parse_list("good.example\nbad name\n", "domains")
    assert one_bad.summary() == "1 domain, 1 invalid line skipped (e.g. line 2: 'bad name')"


def test_only_the_first_five_invalid_lines_are_kept_as_samples() -> None:
    parsed = parse_list("\n".join(f"bad line {i}" for i in range(50)), "domains")
    assert parsed.invalid == 50
    assert [line for line, _ in parsed.invalid_samples] == [1, 2, 3, 4, 5]


def test_empty_and_comment_only_lists_have_no_domains() -> None:
    assert parse_list(b"").domains == set()
    parsed = parse_list("# nothing here\n\n# yet\n")
    assert (parsed.format, parsed.domains, parsed.invalid, parsed.lines) == ("domains", set(), 0, 3)


# ---------------------------------------------------------------- hosts files


def test_hosts_file_takes_every_name_and_ignores_loopback_entries() -> None:
    parsed = parse_list(read("hosts.txt"))
    assert parsed.format == "hosts"
    assert parsed.domains == {
        "ads.example.com",
        "tracker.example.com",
        "metrics.example.com",
        "malware.example.net",
        "ipv6-sink.example",
        "not-an-address.example",   # a plain name in a hosts file is read, not lost
    }
    assert "localhost" not in parsed.domains
    assert [line for line, _ in parsed.invalid_samples] == [12, 14]


def test_hosts_line_over_the_size_limit_is_invalid_even_if_its_names_are_fine() -> None:
    names = " ".join(f"n{i}.example" for i in range(600))
    long_line = f"0.0.0.0 {names}"
    assert len(long_line) > MAX_LINE_BYTES
    parsed = parse_list(f"0.0.0.0 ok.example\n{long_line}\n", "hosts")
    assert parsed.domains == {"ok.example"}
    assert parsed.invalid == 1


# ---------------------------------------------------------------- adblock lists


def test_adblock_list_takes_domain_rules_and_exceptions() -> None:
    parsed = parse_list(read("adblock.txt"))
    assert parsed.format == "adblock"
    assert parsed.domains == {
        "example.com",
        "tracker.example",
        "doc.example",
        "ads.example.net",
        "bare-domain.example",
    }
    assert parsed.exceptions == {"ok.example.com", "allowed.example"}


def test_adblock_rules_narrower_than_a_domain_are_invalid_not_fatal() -> None:
    parsed = parse_list(read("adblock.txt"))
    assert parsed.invalid == 6
    assert [text for _, text in parsed.invalid_samples] == [
        "||thirdparty.example^$third-party",
        "||*.wild.example^",
        "||path.example/ads^",
        "example.org##.advert",
        "/banner[0-9]+/",
    ]
    assert parsed.summary().startswith("5 domains, 2 exceptions, 6 invalid lines skipped")


# ---------------------------------------------------------------- sha256 lists


def test_sha256_list_gives_raw_digests() -> None:
    import hashlib

    parsed = parse_list(read("sha256.txt"))
    assert parsed.format == "sha256"
    assert parsed.digests == {
        hashlib.sha256(name.encode()).digest()
        for name in ("hidden-casino.test", "private.example.org", "xn--bcher-kva.de")
    }
    assert parsed.domains == set()
    assert parsed.invalid_samples == [(6, "not-a-digest"), (7, "abc123")]
    assert parsed.summary() == (
        "3 hashed domains, 2 invalid lines skipped (e.g. line 6: 'not-a-digest')"
    )


# ---------------------------------------------------------------- format detection


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("domains.txt", "domains"),
        ("domains_crlf_bom.txt", "domains"),
        ("hosts.txt", "hosts"),
        ("adblock.txt", "adblock"),
        ("sha256.txt", "sha256"),
    ],
)
def test_format_is_detected_from_the_first_lines(name: str, fmt: str) -> None:
    assert detect_format(read(name)) == fmt


def test_adblock_detected_without_header_and_hosts_without_comments() -> None:
    assert detect_format("! comment\n||a.example^\n||b.example^\n") == "adblock"
    assert detect_format("127.0.0.1 a.example\n0.0.0.0 b.example\n") == "hosts"
    assert detect_format("a.example\nb.example\n") == "domains"


def test_given_format_is_a_hint_and_each_line_is_read_on_its_own() -> None:
    parsed = parse_list(b"0.0.0.0 a.example\n", "domains")
    assert parsed.format == "domains"
    assert parsed.domains == {"a.example"} and parsed.invalid == 0


def test_a_list_mixing_every_kind_of_line_loses_none_and_counts_each_kind() -> None:
    data = (b"# a list put together by hand\n"
            b"plain.example\n"
            b"0.0.0.0 hosts-one.example hosts-two.example\n"
            b"127.0.0.1 hosts-three.example # sink\n"
            b"||rule.example^\n"
            b"@@||ok.rule.example^\n"
            b"! adblock comment\n"
            b"\n"
            b"commented.example # inline\n"
            b"not a name\n")
    parsed = parse_list(data, "hosts")   # the first rule line says hosts; the rest is kept too
    assert parsed.domains == {"plain.example", "hosts-one.example", "hosts-two.example",
                              "hosts-three.example", "rule.example", "commented.example"}
    assert parsed.exceptions == {"ok.rule.example"}
    assert parsed.kinds == {"domain": 2, "hosts": 2, "adblock": 1, "exception": 1, "sha256": 0,
                            "comment": 3, "invalid": 1}
    assert describe_kinds(parsed.kinds) == (
        "2 plain-domain lines, 2 hosts lines, 1 adblock rule, 1 adblock exception, "
        "3 comment or blank lines, 1 invalid line")


def test_a_hashed_list_takes_digests_only_never_a_name_in_clear() -> None:
    digest = hashlib.sha256(b"secret.example").hexdigest()
    parsed = parse_list(f"{digest}\nclear.example\n", "sha256")
    assert parsed.digests == {bytes.fromhex(digest)} and parsed.domains == set()
    assert parsed.invalid == 1


def test_a_list_streamed_in_odd_sized_chunks_parses_as_a_whole() -> None:
    names = [f"site{i}.example" for i in range(30_000)]
    data = ("\n".join(names) + "\n").encode()
    parser = LineParser("domains")
    pieces = (data[i:i + 777] for i in range(0, len(data), 777))
    seen = [name for domains, _, _ in parser.batches(pieces) for name in domains]
    assert seen == names and parser.parsed.lines == 30_000


def test_unknown_format_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown list format 'csv'"):
        parse_list(b"a.example\n", "csv")
