"""Parsing the two port sysctls (in the kernel's own formats) and counting the
ports a client may use."""

import pytest

from agent.ports import parse_port_list, parse_port_range, usable_ports


@pytest.mark.parametrize("text, expected", [
    ("", set()),
    ("\n", set()),
    ("2000\n", {2000}),
    ("1000-1010,2000\n", set(range(1000, 1011)) | {2000}),
    ("40010-40019,40050", set(range(40010, 40020)) | {40050}),
    ("0", {0}),
    ("65535", {65535}),
    ("5-5", {5}),
    ("1,3,2", {1, 2, 3}),
    ("10-12,11-13", {10, 11, 12, 13}),  # overlaps collapse
    ("0-65535", set(range(65536))),
])
def test_parse_port_list(text, expected):
    assert parse_port_list(text) == expected


@pytest.mark.parametrize("text", ["x", "1000-", "-5", "10-5", "65536", "1,,2", "1-2-3", "1;2", "-1"])
def test_parse_port_list_rejects(text):
    with pytest.raises(ValueError, match="not a port list"):
        parse_port_list(text)


@pytest.mark.parametrize("text, expected", [
    ("32768\t60999\n", (32768, 60999)),
    ("40000 40099", (40000, 40099)),
    ("1024\t1024\n", (1024, 1024)),
])
def test_parse_port_range(text, expected):
    assert parse_port_range(text) == expected


@pytest.mark.parametrize("text", ["", "32768", "1 2 3", "60999\t32768", "1 70000", "a b"])
def test_parse_port_range_rejects(text):
    with pytest.raises(ValueError, match="not a port range"):
        parse_port_range(text)


@pytest.mark.parametrize("lo, hi, reserved, expected", [
    (32768, 60999, set(), 28232),                                   # Debian's default range
    (40000, 40099, set(range(40010, 40020)) | {40050}, 89),
    (40000, 40099, {39999, 40100, 1, 65535}, 100),                  # reserved outside the range
    (40000, 40099, {40000, 40099}, 98),                             # both ends are inclusive
    (40000, 40099, set(range(40000, 40100)), 0),
    (40000, 40099, set(range(30000, 50000)), 0),
    (1024, 1024, set(), 1),
    (1024, 1024, {1024}, 0),
    (2000, 1000, set(), 0),                                         # empty range
])
def test_usable_ports(lo, hi, reserved, expected):
    assert usable_ports(lo, hi, reserved) == expected


def test_usable_ports_default_reserved():
    assert usable_ports(40000, 40099) == 100
    assert usable_ports(40000, 40099, frozenset({40001})) == 99
