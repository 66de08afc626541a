"""Age presets: sensible starting points a parent picks instead of twenty toggles.

A profile's explicit keys override its preset's (see `rules.parse_profile`). The README shows
this table; `tests/test_presets.py` keeps both in step with the catalog.
"""
from __future__ import annotations

# Always blocked for children: what no child of any age should reach, plus the ways around
# the filter itself.
_NEVER_FOR_CHILDREN = ["adult", "gambling", "dating", "drugs", "weapons", "malware", "piracy",
                       "anonymous_chat", "bypass"]

PRESETS: dict[str, dict] = {
    "young_child": {
        "block_categories": _NEVER_FOR_CHILDREN + ["violence_hate", "social_networks", "chat",
                                                   "video_streaming", "ai_chat"],
        "block_services": ["tiktok", "instagram", "snapchat", "facebook", "discord", "twitch",
                           "reddit", "twitter", "telegram", "whatsapp", "kick", "character_ai",
                           "chatgpt"],
        "safesearch": True,
        "youtube": "strict",
        "bypass_protection": True,
    },
    "child": {
        "block_categories": _NEVER_FOR_CHILDREN + ["violence_hate", "social_networks", "ai_chat"],
        "block_services": ["tiktok", "instagram", "snapchat", "facebook", "discord", "reddit",
                           "twitter", "kick", "character_ai"],
        "safesearch": True,
        "youtube": "strict",
        "bypass_protection": True,
    },
    "teen": {
        "block_categories": _NEVER_FOR_CHILDREN + ["violence_hate"],
        "block_services": ["kick", "character_ai"],
        "safesearch": True,
        "youtube": "moderate",
        "bypass_protection": True,
    },
    "adult": {
        "block_categories": ["malware"],
        "block_services": [],
        "safesearch": False,
        "youtube": "off",
        "bypass_protection": False,
    },
}
