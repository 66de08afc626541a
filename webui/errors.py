"""Error pages: plain, escaped, no stack traces, JSON for the API."""
from __future__ import annotations

from flask import g, jsonify, make_response, render_template, request
from werkzeug.exceptions import HTTPException


def register(app) -> None:
    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        if request.path.startswith("/api/"):
            response = make_response(jsonify({"error": exc.description or exc.name, "field": None}), exc.code)
        elif g.get("blockpage"):
            response = make_response(exc.description or exc.name, exc.code)
            response.mimetype = "text/plain"
        else:
            response = make_response(render_template("error.html", code=exc.code, title=exc.name,
                                                     message=exc.description, path=request.path), exc.code)
        # Keep what the exception says about itself (Allow on 405, WWW-Authenticate…), not its body.
        for name, value in exc.get_headers():
            if name.lower() != "content-type":
                response.headers[name] = value
        return response

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        app.logger.exception("error on %s", request.path)
        if request.path.startswith("/api/"):
            return jsonify({"error": "internal error; see the web UI's log", "field": None}), 500
        return render_template("error.html", code=500, title="Something went wrong",
                               message="The error was logged. Try again, or reload the page.", path=request.path), 500
