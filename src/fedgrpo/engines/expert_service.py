"""A site's persistent expert service on its loopback: JSON over HTTP, standard library only.

In a Flower deployment the SuperNode starts a fresh ClientApp process for every message, which would
pay the imports and the expert model load each time. So each site runs `fedgrpo expert serve` once:
it holds the private data and the loaded expert model, and the ClientApp only forwards the request
to it (`RemoteExpert`) and returns the floats.

Endpoints (bound to 127.0.0.1 by default; the service is reachable only from its own machine):
`GET /hello` -> {"expert_id", "domain", "privacy", "reads"}; `POST /calibrate` and `POST /score` take
and return the wire messages (`fedgrpo.types`: a calibration request, a `WireScoreRequest`; packed
replies) as JSON bodies (`transport.json_body`). The service holds the site's expert behind its
`ClientEndpoint` (`transport.session`), which keeps the session's question texts across requests.
Nothing is unpickled.

A request is held to the request contract (`transport.contract`) before the expert sees it: its
Content-Length is required and checked against the size cap before the body is read (a client
cannot make the service wait for, or hold, a body it will not take), the body must be JSON (a
nesting deeper than the parser's recursion limit is refused, not a dropped connection), and it must
hold exactly the request's fields with their types and bounds. A refused request gets status 400 and
a scorer fault status 500, each with a one-line reason (`error`; a fault also its `kind`,
`types.FailureKind`) that `RemoteExpert` raises and the ClientApp turns into an error reply. The
service stays up whatever a request holds.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

from fedgrpo.transport.base import Expert, ExpertFault, failure_kind
from fedgrpo.transport.contract import (
    MAX_REPLY_BYTES,
    RequestRefused,
    check_request_size,
    check_size,
    check_wire_calibration_reply,
    check_wire_score_reply,
)
from fedgrpo.transport.json_body import (
    body,
    calibration_reply_body,
    calibration_reply_of,
    calibration_request_body,
    calibration_request_of,
    hello_body,
    hello_of,
    parse_json_body,
    score_reply_body,
    score_reply_of,
    score_request_body,
    score_request_of,
)
from fedgrpo.transport.session import wire_endpoint
from fedgrpo.types import (
    CalibrationRequest,
    FailureKind,
    Hello,
    WireCalibrationReply,
    WireScoreReply,
    WireScoreRequest,
)

__all__ = ["ExpertService", "ExpertServiceError", "RemoteExpert", "content_length", "parse_json_body"]

# The request each endpoint takes from its body (under the request contract), and its reply's body.
REQUEST_OF_PATH = {"/calibrate": calibration_request_of, "/score": score_request_of}
READ_TIMEOUT_S = 60.0  # a client that declares more body than it sends frees its thread after this


def content_length(values: list[str] | None) -> int:
    """The body size a request declares (its Content-Length header values), checked before anything
    is read: exactly one decimal count, within the request cap; else RequestRefused.

    >>> content_length(["120"])
    120
    """
    if not values:
        raise RequestRefused("no Content-Length: send the body with its length (chunked bodies are not accepted)")
    if len(values) > 1:
        raise RequestRefused(f"{len(values)} Content-Length headers: send one")
    raw = values[0].strip()
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 20:  # no sign, space, underscore or exponent
        raise RequestRefused(f"Content-Length {raw[:20]!r} is not a byte count")
    size = int(raw)
    check_request_size(size)
    return size


class ExpertService:
    """Serve one expert on `host:port` (port 0 picks a free one; see `.url`) from a thread."""

    def __init__(self, expert: Expert, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.expert = expert
        self.endpoint = wire_endpoint(expert)  # the site's side of the scoring session
        self.hello = self.endpoint.hello()
        self.expert_id, self.domain, self.privacy = self.hello.expert_id, self.hello.domain, self.hello.privacy
        self._server = ThreadingHTTPServer((host, port), _handler_for(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> ExpertService:
        self._thread = threading.Thread(target=self._server.serve_forever, name="expert-service", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler_for(service: ExpertService) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = READ_TIMEOUT_S  # socket reads and writes only: scoring itself may take longer

        def log_message(self, *args: Any) -> None:  # quiet: one line per request is noise
            pass

        def _send(self, status: int, payload: dict[str, Any] | bytes) -> None:
            data = payload if isinstance(payload, bytes) else body(payload)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/hello":
                self._send(200, hello_body(service.hello))
            else:
                self._send(404, {"error": f"no endpoint {self.path}"})

        def do_POST(self) -> None:
            request_from_fields = REQUEST_OF_PATH.get(self.path)
            if request_from_fields is None:  # its body is never read; the connection closes after the reply
                self._send(404, {"error": f"no endpoint {self.path}"})
                return
            try:
                request = request_from_fields(self._read_body())
            except RequestRefused as exc:
                self._send(400, {"error": f"malformed request: {exc}"})
                return
            try:
                if isinstance(request, CalibrationRequest):
                    reply = calibration_reply_body(service.endpoint.calibrate(request))
                else:
                    reply = score_reply_body(service.endpoint.score(request))
            except Exception as exc:  # noqa: BLE001 - reported to the caller, who records a failure
                self._send(500, {"error": f"{type(exc).__name__}: {exc}", "kind": failure_kind(exc)})
                return
            self._send(200, reply)

        def _read_body(self) -> bytes:
            """The body, read only after its declared size passed the cap; all of it, or RequestRefused."""
            size = content_length(self.headers.get_all("Content-Length"))
            data = self.rfile.read(size)
            if len(data) != size:
                raise RequestRefused(f"the body ended after {len(data)} of its {size} declared bytes")
            return data

    return Handler


class ExpertServiceError(ExpertFault):
    """The expert service could not be reached or refused the request; `kind` is the failure's kind
    as the service reported it (a spent privacy budget stays BUDGET_SPENT across the hop)."""


class RemoteExpert:
    """An expert on the site's loopback: what the ClientApp calls, forwarded to the site's service.
    It speaks the wire messages as they are (the service's `ClientEndpoint` resolves them)."""

    speaks_wire: ClassVar[bool] = True

    def __init__(self, url: str, timeout_s: float = 600.0) -> None:
        self.url, self.timeout_s = url.rstrip("/"), timeout_s

    def hello(self) -> Hello:
        try:
            return hello_of(self._call("GET", "/hello"))
        except (KeyError, ValueError) as exc:
            raise ExpertServiceError(f"expert service {self.url}/hello: {exc}") from None

    def calibrate(self, request: CalibrationRequest) -> WireCalibrationReply:
        """The service's reply under the reply contract (`transport.contract`); ReplyRefused else."""
        data = self._call("POST", "/calibrate", calibration_request_body(request))
        return check_wire_calibration_reply(calibration_reply_of(data), request)

    def score(self, request: WireScoreRequest) -> WireScoreReply:
        """The service's reply under the reply contract (`transport.contract`); ReplyRefused else."""
        data = self._call("POST", "/score", score_request_body(request))
        return check_wire_score_reply(score_reply_of(data), request)

    def _call(self, method: str, path: str, data: bytes | None = None) -> bytes:
        if data is not None:
            check_request_size(len(data))  # the service would refuse it: say so here, not as a reset
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                reply = resp.read(MAX_REPLY_BYTES + 1)  # never more than the contract allows into memory
                check_size(len(reply))
                return reply
        except urllib.error.HTTPError as exc:
            reason, kind = _error_of(exc)
            raise ExpertServiceError(f"expert service {self.url}{path}: {reason}", kind) from None
        except (urllib.error.URLError, OSError) as exc:
            timed_out = isinstance(exc, TimeoutError) or isinstance(getattr(exc, "reason", None), TimeoutError)
            raise ExpertServiceError(f"expert service {self.url} unreachable: {exc}",
                                     FailureKind.TIMED_OUT if timed_out else FailureKind.ERROR) from None


def _error_of(exc: urllib.error.HTTPError) -> tuple[str, FailureKind]:
    """The one-line reason and the failure kind of the service's error reply; the HTTP reason and
    ERROR where its body does not say (not JSON, not an object, a kind we do not know)."""
    try:
        data = json.loads(exc.read(MAX_REPLY_BYTES))
    except (ValueError, RecursionError):
        return str(exc.reason), FailureKind.ERROR
    if not isinstance(data, dict):
        return str(exc.reason), FailureKind.ERROR
    kind = data.get("kind")
    return (str(data.get("error", exc.reason)),
            FailureKind(kind) if kind in tuple(FailureKind) else FailureKind.ERROR)
