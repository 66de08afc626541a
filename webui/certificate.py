"""The block page over HTTPS: the house's local CA, its download and per-platform instructions.

(Being built this session.)
"""
from __future__ import annotations

from flask import Blueprint

bp = Blueprint("certificate", __name__)


def start_https(app, config) -> None:
    """Serve the block page over HTTPS when web.blockpage_https is `ca` (filled in this session)."""
