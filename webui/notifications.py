"""Notification channels (test button, failures) and the weekly summary pages.

(Being built this session.)
"""
from __future__ import annotations

from flask import Blueprint

bp = Blueprint("notifications", __name__)


def start_worker(app, config) -> None:
    """Start the background sender of notifications (filled in this session)."""
