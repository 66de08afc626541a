"""Children's access requests: the parents' /requests page (approve for a while, or decline)."""
from __future__ import annotations

from flask import Blueprint

bp = Blueprint("requests", __name__)


@bp.route("/requests")
def page():
    from flask import render_template
    return render_template("requests.html")
