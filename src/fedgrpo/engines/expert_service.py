"""A site's persistent expert service on its loopback: JSON over HTTP, standard library only.

In a Flower deployment the SuperNode starts a fresh ClientApp process for every message, which would
pay the imports and the expert model load each time. So each site runs `fedgrpo expert serve` once:
it holds the private data and the loaded expert model, and the ClientApp only forwards the request
to it (`RemoteExpert`) and returns the floats.

Endpoints (bound to 127.0.0.1 by default; the service is reachable only from its own machine):
`GET /hello` -> {"expert_id", "domain", "privacy"}; `POST /calibrate` and `POST /score` take and return the
`fedgrpo.types` messages as JSON objects. Nothing is unpickled; a bad request gets status 400 and a
scorer fault status 500, each with a one-line reason that the ClientApp turns into an error reply.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from fedgrpo.transport.base import Expert
from fedgrpo.transport.contract import (
    MAX_REPLY_BYTES,
    calibration_reply_from_fields,
    check_calibration_reply,
    check_score_reply,
    check_size,
    score_reply_from_fields,
)
from fedgrpo.types import (
    CalibrationItem,
    CalibrationReply,
    CalibrationRequest,
    Hello,
    ScoreItem,
    ScoreReply,
    ScoreRequest,
)


def calibration_request_from_json(data: dict[str, Any]) -> CalibrationRequest:
    return CalibrationRequest(tuple(CalibrationItem(**item) for item in data["items"]))


def score_request_from_json(data: dict[str, Any]) -> ScoreRequest:
    return ScoreRequest(int(data["step"]), tuple(
        ScoreItem(i["question_id"], i["generator"], i["question"], tuple(i["candidates"])) for i in data["items"]))


class ExpertService:
    """Serve one expert on `host:port` (port 0 picks a free one; see `.url`) from a thread."""

    def __init__(self, expert: Expert, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.expert = expert
        hello = expert.hello()
        self.expert_id, self.domain, self.privacy = hello.expert_id, hello.domain, hello.privacy
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
        def log_message(self, *args: Any) -> None:  # quiet: one line per request is noise
            pass

        def _send(self, status: int, payload: dict[str, Any]) -> None:
            body = json.dumps(payload).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path == "/hello":
                self._send(200, {"expert_id": service.expert_id, "domain": service.domain,
                                 "privacy": service.privacy})
            else:
                self._send(404, {"error": f"no endpoint {self.path}"})

        def do_POST(self) -> None:
            try:
                data = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                if self.path == "/calibrate":
                    request: Any = calibration_request_from_json(data)
                elif self.path == "/score":
                    request = score_request_from_json(data)
                else:
                    self._send(404, {"error": f"no endpoint {self.path}"})
                    return
            except (ValueError, KeyError, TypeError) as exc:
                self._send(400, {"error": f"malformed request: {exc}"})
                return
            try:
                reply = (service.expert.calibrate(request) if self.path == "/calibrate"
                         else service.expert.score(request))
            except Exception as exc:  # noqa: BLE001 - reported to the caller, who records a failure
                self._send(500, {"error": f"{type(exc).__name__}: {exc}"})
                return
            self._send(200, asdict(reply))

    return Handler


class ExpertServiceError(RuntimeError):
    """The expert service could not be reached or refused the request."""


class RemoteExpert:
    """An `Expert` on the site's loopback: what the ClientApp calls, forwarded to the site's service."""

    def __init__(self, url: str, timeout_s: float = 600.0) -> None:
        self.url, self.timeout_s = url.rstrip("/"), timeout_s

    def hello(self) -> Hello:
        data = self._call("GET", "/hello")
        privacy = data.get("privacy") or {}
        if not isinstance(privacy, dict):
            raise ExpertServiceError(f"expert service {self.url}/hello: its privacy declaration is not an object")
        return Hello(str(data["expert_id"]), str(data["domain"]), privacy)

    def calibrate(self, request: CalibrationRequest) -> CalibrationReply:
        """The service's reply under the reply contract (`transport.contract`); ReplyRefused else."""
        return check_calibration_reply(
            calibration_reply_from_fields(self._call("POST", "/calibrate", asdict(request))), request)

    def score(self, request: ScoreRequest) -> ScoreReply:
        """The service's reply under the reply contract (`transport.contract`); ReplyRefused else."""
        return check_score_reply(score_reply_from_fields(self._call("POST", "/score", asdict(request))), request)

    def _call(self, method: str, path: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        body = None if payload is None else json.dumps(payload).encode("utf-8")
        req = urllib.request.Request(self.url + path, data=body, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                body = resp.read(MAX_REPLY_BYTES + 1)  # never more than the contract allows into memory
                check_size(len(body))
                return json.loads(body)
        except urllib.error.HTTPError as exc:
            try:
                reason = json.loads(exc.read()).get("error", exc.reason)
            except ValueError:
                reason = exc.reason
            raise ExpertServiceError(f"expert service {self.url}{path}: {reason}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise ExpertServiceError(f"expert service {self.url} unreachable: {exc}") from None
