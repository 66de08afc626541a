"""Error pages: plain, escaped, no stack traces, JSON for the API."""
from __future__ import annotations

from flask import g, jsonify, render_template, request
from werkzeug.exceptions import HTTPException


def register(app) -> None:
    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        if request.path.startswith("/api/"):
            return jsonify({"error": exc.description or exc.name}), exc.code
        if g.get("blockpage"):
            return exc.description or exc.name, exc.code
        return render_template("error.html", code=exc.code, title=exc.name, message=exc.description,
                               path=request.path), exc.code

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        app.logger.exception("error on %s", request.path)
        if request.path.startswith("/api/"):
            return jsonify({"error": "internal error; see the web UI's log"}), 500
        return render_template("error.html", code=500, title="Something went wrong",
                               message="The error was logged. Try again, or reload the page.", path=request.path), 500
