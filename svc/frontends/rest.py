"""The REST frontend: TF Serving's `/v1/models/...` API on starlette (served by hypercorn, HTTP/1.1 + h2c),
plus the probes (`/livez`, `/readyz`) and the Prometheus page.

Mirrors `model_servers/http_rest_api_handler.cc` and `http_server.cc`: the same URL regexes (matched on the
raw path, query string included, case-insensitively), the same dispatch, status codes and `{"error": ...}`
bodies, CORS preflight and headers, gzip request bodies. JSON <-> tensor conversion lives in
`svc.wire.json_tensor` / `svc.wire.json_examples`; the request logic in `svc.inference.predict`.
"""

from __future__ import annotations

import gzip
import json
import re
import zlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import unquote

import anyio
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2

from svc.errors import Code, ServingError, http_status, invalid_argument
from svc.frontends.request_log import REQUEST_ID_HEADER, RequestLog, RequestRecord
from svc.inference import classify_regress as inference
from svc.inference import predict as api
from svc.lifecycle.readiness import Readiness
from svc.logging import get_logger
from svc.metrics import Metrics
from svc.servables.saved_model import Servable
from svc.wire import json_examples as json_example
from svc.wire import json_tensor

if TYPE_CHECKING:
    from svc.frontends.rest_v2 import V2Routes

log = get_logger(frontend="rest")

_POST = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)", re.IGNORECASE
)
_GET = re.compile(r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?", re.IGNORECASE)
_V1 = re.compile(r"/v1/.*", re.IGNORECASE | re.DOTALL)
_V2 = re.compile(r"/v2(?:/.*)?", re.DOTALL)
_ORIGIN = re.compile(r"https?://")
_INT64_MAX = 2**63 - 1
JSON = "application/json"
OFFLOAD_BYTES = 64 * 1024  # request bodies above this are parsed in a worker thread
OFFLOAD_ELEMENTS = 8192  # responses above this many elements are written in a worker thread
CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, GET",
    "Access-Control-Allow-Headers": "Content-Type",
}


def json_response(body: bytes, status: int = 200) -> Response:
    return Response(body, status_code=status, media_type=JSON)


def _version(text: str | None) -> int | None:
    if text is None:
        return None
    value = int(text)
    if value > _INT64_MAX:
        raise invalid_argument(f"Failed to convert version: {text} to numeric.")
    return value


def _decode(text: str | None) -> str | None:
    return None if text is None else unquote(text)


@dataclass
class RestOptions:
    cors: bool = False
    timeout_ms: int = 30000
    max_request_bytes: int = 64 * 1024 * 1024
    metrics_path: str | None = None  # Prometheus page, when --monitoring_config_file enables it
    read_timeout_seconds: float = 30.0  # --request_read_timeout_seconds: a started body must arrive by then


class RequestTooLarge(Exception):
    pass


class RequestTimedOut(Exception):
    pass


class RestApi:
    def __init__(
        self, core: api.Core, requests: RequestLog, readiness: Readiness, metrics: Metrics, options: RestOptions
    ) -> None:
        self._core = core
        self._requests = requests
        self._readiness = readiness
        self._metrics = metrics
        self._options = options
        self.accepting = True
        self.v2: V2Routes | None = None  # the Open Inference Protocol's routes (svc/frontends/rest_v2.py)

    @property
    def core(self) -> api.Core:
        return self._core

    def app(self) -> Starlette:
        methods = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]
        return Starlette(routes=[Route("/{path:path}", self.dispatch, methods=methods)])

    async def dispatch(self, request: Request) -> Response:
        raw = request.scope.get("raw_path") or request.url.path.encode()
        path = raw.decode("latin-1").split("?", 1)[0]
        uri = f"{path}?{request.url.query}" if request.url.query else path
        if path == "/livez":
            return json_response(b'{"status": "alive"}\n')
        if path == "/readyz":
            return self.readyz()
        if self._options.metrics_path is not None and path == self._options.metrics_path:
            return self.prometheus(uri)
        if self.v2 is not None and _V2.fullmatch(path):
            probe = self.v2.probe(path)
            response = probe if probe is not None else await self._v1(request, uri, self.v2.route)
        elif not _V1.fullmatch(uri):
            return Response("Not Found", status_code=404, media_type="text/html")
        else:
            response = await self._v1(request, uri)
        if self._options.cors:
            response.headers.update(CORS_HEADERS)
        return response

    async def _v1(
        self, request: Request, uri: str,
        route: Callable[[Request, str, RequestRecord], Awaitable[Response]] | None = None,
    ) -> Response:
        record = self._requests.start("rest", request.method.lower(), request.headers.get(REQUEST_ID_HEADER))
        record.tf_api = ""
        code = Code.OK
        error = ""
        try:
            if request.method == "OPTIONS":
                if not _ORIGIN.search(request.headers.get("origin", "")):
                    raise ServingError(Code.FAILED_PRECONDITION, "Origin header is missing in CORS preflight")
                response = Response(b"", media_type=JSON)
            elif not self.accepting:
                raise ServingError(Code.UNAVAILABLE, "Server is shutting down")
            else:
                response = await (route or self._route)(request, uri, record)
        except ServingError as exc:
            code, error = exc.code, exc.message
            if request.method == "OPTIONS":  # TF Serving answers a failed preflight with an empty body
                response = Response(b"", status_code=http_status(exc.code), media_type=JSON)
            else:
                response = json_response(json_tensor.format_error(exc.message), http_status(exc.code))
        except RequestTimedOut:
            code = Code.DEADLINE_EXCEEDED
            error = f"Request body not received within {self._options.read_timeout_seconds:g} s"
            response = json_response(json_tensor.format_error(error), 408)
            response.headers["connection"] = "close"
        except ClientDisconnect:  # the client went away mid-body: not a server error (issue 10)
            code, error = Code.CANCELLED, "cancelled"
            response = Response(b"", status_code=499)
        except RequestTooLarge:
            code = Code.RESOURCE_EXHAUSTED
            error = f"Request body is larger than the limit of {self._options.max_request_bytes} bytes"
            response = json_response(json_tensor.format_error(error), 413)
        except Exception:
            log.exception("request_crashed", path=uri, request_id=record.request_id)
            code, error = Code.INTERNAL, "internal error"
            response = json_response(json_tensor.format_error("Internal error"), 500)
        if record.request_id == request.headers.get(REQUEST_ID_HEADER):  # echoed only when sent (issue 11)
            response.headers[REQUEST_ID_HEADER] = record.request_id
        self._requests.finish(record, code.name, error)
        return response

    async def _route(self, request: Request, uri: str, record: RequestRecord) -> Response:
        method = request.method
        if method == "POST" and (m := _POST.fullmatch(uri)):
            name, version, label, verb = m.groups()
            target = api.Target(unquote(name), _version(version), _decode(label))
            self._note(record, target.name, verb, verb)
            body = await self.read_body(request)
            if verb == "predict":
                return await self.predict(target, body)
            if verb in ("classify", "regress"):
                signature_name, model_input = json_example.parse_classify_regress(body, verb)
                if verb == "classify":
                    request_pb = inference.classification_request(target, signature_name, model_input)
                    classified = await inference.classify(self._core, request_pb, deadline=self.deadline())
                    return json_response(json_example.format_classify(classified.result))
                regression_pb = inference.regression_request(target, signature_name, model_input)
                regressed = await inference.regress(self._core, regression_pb, deadline=self.deadline())
                return json_response(json_example.format_regress(regressed.result))
        elif method == "GET" and (m := _GET.fullmatch(uri)):
            name, version, label, metadata = m.groups()
            if name is None:
                raise invalid_argument("Missing model name in request.")
            target = api.Target(unquote(name), _version(version), _decode(label))
            # TF Serving matches the path case-insensitively but serves metadata only for the exact word;
            # any other spelling (`METADATA`) answers the status (issue 10).
            self._note(record, target.name, "", "metadata" if metadata == "metadata" else "status")
            if metadata == "metadata":
                return self.metadata(target)
            return self.status(target)
        raise invalid_argument(f"Malformed request: {method} {uri}")

    @staticmethod
    def _note(record: RequestRecord, model: str, tf_api: str, api_name: str) -> None:
        """What the request turned out to be: TF Serving's metric label (the URL's method word, "" for GETs)
        and our log's `api` (predict, classify, regress, status, metadata)."""
        record.model = model
        record.tf_api = tf_api
        record.api = api_name

    def deadline(self) -> float | None:
        if self._options.timeout_ms > 0:
            return anyio.current_time() + self._options.timeout_ms / 1000
        return None

    async def read_body(self, request: Request) -> bytes:
        limit = self._options.max_request_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise RequestTooLarge
        chunks: list[bytes] = []
        size = 0
        # A client that starts a body must finish it in time: a slow sender is answered 408 (issue 10).
        with anyio.move_on_after(self._options.read_timeout_seconds) as scope:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise RequestTooLarge
                chunks.append(chunk)
        if scope.cancelled_caught:
            raise RequestTimedOut
        body = b"".join(chunks)
        if "gzip" in request.headers.get("content-encoding", "").lower():
            try:
                decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
                body = decompressor.decompress(body, limit + 1)
                if len(body) > limit or decompressor.unconsumed_tail:
                    raise RequestTooLarge
            except (zlib.error, EOFError, gzip.BadGzipFile) as exc:
                raise invalid_argument("Failed to decompress gzip request body") from exc
        return body

    async def predict(self, target: api.Target, body: bytes) -> Response:
        held: list[Servable] = []
        offload = len(body) > OFFLOAD_BYTES  # big JSON is parsed and written off the event loop

        def acquire() -> Servable:
            servable = api.acquire(self._core, target)
            held.append(servable)
            return servable

        def input_map(signature_name: str) -> Mapping[str, int]:
            servable = anyio.from_thread.run_sync(acquire) if offload else acquire()
            signature = servable.signatures.get(api.signature_name_or_default(signature_name))
            if signature is None:
                raise invalid_argument(
                    f'Serving signature name: "{api.signature_name_or_default(signature_name)}" '
                    "not found in signature def"
                )
            if not signature.inputs:
                raise invalid_argument(
                    f"Failed to get input map for signature: {signature_name or 'DEFAULT'}"
                )
            return {alias: info.dtype for alias, info in signature.inputs.items()}

        try:
            if offload:
                parsed = await anyio.to_thread.run_sync(json_tensor.parse_predict, body, input_map)
            else:
                parsed = json_tensor.parse_predict(body, input_map)
            result = await api.run_predict(
                self._core, held[0], parsed.signature_name, parsed.inputs, deadline=self.deadline()
            )
            if offload or sum(a.size for a in result.outputs.values()) > OFFLOAD_ELEMENTS:
                text = await anyio.to_thread.run_sync(
                    json_tensor.format_predict, result.outputs, result.dtypes, parsed.format
                )
            else:
                text = json_tensor.format_predict(result.outputs, result.dtypes, parsed.format)
            return json_response(text)
        finally:
            for servable in held:
                servable.release()

    def metadata(self, target: api.Target) -> Response:
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=[api.SIGNATURE_DEF_FIELD])
        request.model_spec.name = target.name
        if target.version is not None:
            request.model_spec.version.value = target.version
        elif target.label is not None:
            request.model_spec.version_label = target.label
        response = api.get_model_metadata(self._core, request)
        return json_response(json_example.format_model_metadata(response))

    def status(self, target: api.Target) -> Response:
        # GetModelStatus ignores a label, as TF Serving's does: /labels/L lists every version.
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = target.name
        if target.version is not None:
            request.model_spec.version.value = target.version
        response = api.get_model_status(self._core, request)
        return json_response(json_example.format_model_status(response))

    def readyz(self) -> Response:
        not_ready = self._readiness.models_not_ready()
        if not not_ready and not self._readiness.draining:
            return json_response(b'{"status": "ready"}\n')
        body = {"status": "not ready", "draining": self._readiness.draining, "models_not_ready": not_ready}
        return json_response(json.dumps(body).encode() + b"\n", 503)

    def prometheus(self, uri: str) -> Response:
        path = self._options.metrics_path
        if uri != path:
            return Response(f"Unexpected path: {uri}. Should be {path}", status_code=400, media_type="text/plain")
        return Response(self._metrics.render(), media_type="text/plain")
