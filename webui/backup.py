"""Backup (config and state as one file) and restore (validated before anything is replaced).

(Being built this session.)
"""
from __future__ import annotations

from flask import Blueprint

bp = Blueprint("backup", __name__)
