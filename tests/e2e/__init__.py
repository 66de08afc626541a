"""End-to-end tests: the real daemon as a subprocess, over real sockets."""
