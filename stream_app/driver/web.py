"""The process's HTTP endpoints, on prometheus-client's WSGI app and the standard library's server.

    /metrics  Prometheus text format
    /healthz  200 while the process runs and its loop turns (liveness)
    /readyz   200 once assigned partitions are restored and the consumer is polling (readiness)

Nothing else is served (no state, no tables). It binds loopback unless told otherwise.
"""

from __future__ import annotations

import logging
import threading
from socketserver import ThreadingMixIn
from typing import Any, Callable, Iterable
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import REGISTRY, CollectorRegistry, make_wsgi_app

log = logging.getLogger(__name__)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the standard library's name
        pass


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


def health_app(alive: Callable[[], bool], ready: Callable[[], bool], before_scrape: Callable[[], None] | None = None,
               registry: CollectorRegistry = REGISTRY) -> Callable:
    metrics_app = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            if before_scrape is not None:
                before_scrape()
            return metrics_app(environ, start_response)
        if path in ("/healthz", "/readyz"):
            ok = (alive if path == "/healthz" else ready)()
            start_response("200 OK" if ok else "503 Service Unavailable", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"ok\n" if ok else b"not ready\n" if path == "/readyz" else b"stalled\n"]
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [b"not found: try /metrics, /healthz or /readyz\n"]

    return app


def serve(host: str, port: int, app: Callable) -> WSGIServer:
    """Serve `app` on a daemon thread; returns the server (call shutdown() to stop it)."""
    server = make_server(host, port, app, server_class=_ThreadingServer, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, name="http", daemon=True)
    thread.start()
    log.info("serving /metrics, /healthz and /readyz on http://%s:%d", host, server.server_port)
    return server
