"""webui/vendors.py against Debian's real IEEE registry (ieee-data, installed by make test)."""
from __future__ import annotations

from pathlib import Path

from webui import vendors


def test_makers_of_real_prefixes_and_none_for_private_or_unknown_addresses(tmp_path):
    found = vendors.makers(["F0:18:98:11:22:33", "00:09:bf:00:00:01", "3a:11:22:33:44:55", "nonsense", None])
    assert found == {"F0:18:98:11:22:33": "Apple, Inc.", "00:09:bf:00:00:01": "Nintendo Co., Ltd."}


def test_a_more_specific_block_wins_over_the_block_it_was_carved_from(tmp_path):
    (tmp_path / "oui.csv").write_text("Registry,Assignment,Organization Name,Organization Address\n"
                                      "MA-L,70B3D5,IEEE Registration Authority,somewhere\n"
                                      'MA-L,001122,"Maker, Inc.",somewhere\n')
    (tmp_path / "oui36.csv").write_text("Registry,Assignment,Organization Name,Organization Address\n"
                                        "MA-S,70B3D5123,Small Maker Ltd,elsewhere\n")
    vendors._known.clear()
    try:
        assert vendors.makers(["70:b3:d5:12:34:56", "70:b3:d5:99:99:99", "00:11:22:33:44:55"], tmp_path) == \
            {"70:b3:d5:12:34:56": "Small Maker Ltd", "00:11:22:33:44:55": "Maker, Inc."}
    finally:
        vendors._known.clear()


def test_without_the_registry_no_maker_is_shown(tmp_path):
    vendors._known.clear()
    try:
        assert vendors.makers(["F0:18:98:11:22:33"], Path(tmp_path / "absent")) == {}
    finally:
        vendors._known.clear()
