"""`filterd-webui --config PATH`: the web UI on `web.listen`, served by waitress."""
from __future__ import annotations

import argparse
import logging
import sys

from filterd.rules.config import ConfigError, load_config
from filterd.store import state

from . import setup_code


def current_setup_code(config) -> str | None:
    """The setup code while no password is set (made when missing); None once it is (the file goes)."""
    db = state.connect(state.db_path(config.data_dir))
    try:
        if db.execute("SELECT 1 FROM admin WHERE id = 1").fetchone() is not None:
            setup_code.remove(config.data_dir)
            return None
    finally:
        db.close()
    return setup_code.ensure(config.data_dir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="filterd-webui", description="filterd's web UI and block page.")
    parser.add_argument("--config", default="config/filterd.yaml")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--setup-code", action="store_true",
                        help="print the one-time setup code (made if missing; nothing once the password is set) and exit")
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=getattr(logging, args.log_level.upper()),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print("filterd-webui: config refused:\n  " + "\n  ".join(exc.problems), file=sys.stderr)
        return 2
    problem = state.data_dir_problem(config.data_dir)
    if problem:
        print(f"filterd-webui: {problem}", file=sys.stderr)
        return 1
    code = current_setup_code(config)
    if args.setup_code:
        if code:
            print(code)
        return 0
    from waitress import create_server

    from . import create_app
    app = create_app(args.config)
    web = config.rules.web
    host = web.host
    shown = f"[{host}]" if ":" in host else host
    try:
        # ident="" : no Server banner; no proxy headers are trusted, so the peer address is the socket's.
        server = create_server(app, host=host, port=web.port, threads=args.threads, ident="",
                               clear_untrusted_proxy_headers=True, max_request_body_size=2 * 2**20,
                               channel_timeout=30)
    except OSError as exc:
        # One line, as the daemon says it: a traceback hides the cause from a parent reading the journal.
        print(f"filterd-webui: cannot listen on {shown}:{web.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    from .certificate import start_https
    from .notifications import start_worker
    start_worker(app, config)
    start_https(app, config)
    logging.getLogger("filterd.webui").info("web UI on http://%s:%d/ (also http://%s/ once DNS points here)",
                                            shown, web.port, web.hostnames[0] if web.hostnames else shown)
    if code:
        logging.getLogger("filterd.webui").warning(
            "no password yet: the setup code is %s (type it on the setup page with the new password;"
            " it is also in %s until then)", code, setup_code.path(config.data_dir))
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
