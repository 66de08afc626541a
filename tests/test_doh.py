"""The DoH request reader (filterd/dns/doh.py): what a request must look like to reach the
resolver, and the status every other request gets. Over the wire: tests/e2e/test_encrypted_dns.py."""
from __future__ import annotations

import base64

import pytest
from dnslib import DNSRecord

from filterd.dns.doh import HttpError, Request, dns_message, parse_request, response

QUERY = DNSRecord.question("example.com", "A").pack()


def request(method: str, target: str, body: bytes = b"", **headers: str) -> Request:
    return Request(method, target, {k.replace("_", "-").lower(): v for k, v in headers.items()}, body, True)


def test_a_post_to_the_device_path_gives_its_message_and_client_id():
    got = dns_message(request("POST", "/dns-query/Emma-Phone", QUERY, content_type="application/dns-message"))
    assert got == (QUERY, "emma-phone")


def test_a_get_with_unpadded_base64url_gives_the_message_and_no_client_id():
    encoded = base64.urlsafe_b64encode(QUERY).rstrip(b"=").decode()
    assert dns_message(request("GET", f"/dns-query?dns={encoded}")) == (QUERY, None)


@pytest.mark.parametrize("req, status", [
    (request("GET", "/dns-query?dns=%%%"), 400),
    (request("GET", "/dns-query?dns=AAAB"), 400),                       # too short for a DNS header
    (request("GET", "/dns-query?dns=a&dns=b"), 400),
    (request("POST", "/dns-query", QUERY, content_type="application/json"), 415),
    (request("POST", "/dns-query", QUERY), 415),
    (request("DELETE", "/dns-query"), 405),
    (request("GET", "/dns-query/two.labels?dns=AAAB"), 404),
    (request("GET", "/dns-query/under_score"), 404),
    (request("GET", "/"), 404),
])
def test_requests_that_are_no_doh_query_get_their_status(req, status):
    with pytest.raises(HttpError) as caught:
        dns_message(req)
    assert caught.value.status == status and not caught.value.close


def test_a_request_is_read_only_when_its_body_is_complete_and_pipelined_ones_follow():
    one = (b"POST /dns-query HTTP/1.1\r\nHost: filter.home\r\nContent-Type: application/dns-message\r\n"
           b"Content-Length: %d\r\n\r\n" % len(QUERY)) + QUERY
    two = b"GET /dns-query?dns=x HTTP/1.1\r\nConnection: close\r\n\r\n"
    assert parse_request(one[:-1]) is None
    first, used = parse_request(one + two)
    assert (first.method, first.body, first.keep_alive, first.headers["host"]) == ("POST", QUERY, True, "filter.home")
    second, used2 = parse_request((one + two)[used:])
    assert (second.method, second.keep_alive, used2) == ("GET", False, len(two))


@pytest.mark.parametrize("data, status", [
    (b"HELLO\r\n\r\n", 400),
    (b"GET /dns-query HTTP/2.0\r\n\r\n", 505),
    (b"GET /dns-query HTTP/1.1\r\n folded: header\r\n\r\n", 400),
    (b"POST /dns-query HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 501),
    (b"POST /dns-query HTTP/1.1\r\nContent-Length: 70000\r\n\r\n", 413),
    (b"POST /dns-query HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
    (b"POST /dns-query HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n", 431),
])
def test_a_request_whose_framing_cannot_be_trusted_closes_the_connection(data, status):
    with pytest.raises(HttpError) as caught:
        parse_request(data)
    assert caught.value.status == status and caught.value.close


def test_an_answer_carries_its_length_and_type_and_an_error_its_allow_header():
    assert response(200, b"abc").startswith(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n"
                                            b"Content-Type: application/dns-message\r\n")
    assert b"Allow: GET, POST\r\n" in response(405)
    assert response(400, close=True).endswith(b"Connection: close\r\n\r\n")
