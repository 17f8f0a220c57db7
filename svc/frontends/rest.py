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
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    regression_pb2,
)

from svc.errors import Code, RequestTimedOut, RequestTooLarge, ServingError, http_status_of, invalid_argument
from svc.frontends.envelope import Envelope
from svc.frontends.request_log import REQUEST_ID_HEADER
from svc.inference import classify_regress, model_info
from svc.inference.core import Core, Target, note_version, signature_name_or_default
from svc.inference.predict import run_predict
from svc.lifecycle.readiness import Readiness
from svc.lifecycle.serving_map import ServableHandle
from svc.metrics import Metrics
from svc.request_context import RequestRecord
from svc.servables.saved_model import Servable
from svc.types import INT64_MAX, OFFLOAD_JSON_BYTES, OFFLOAD_JSON_ELEMENTS
from svc.wire import json_examples as json_example
from svc.wire import json_tensor

if TYPE_CHECKING:
    from svc.frontends.rest_v2 import V2Routes

_POST = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)", re.IGNORECASE
)
_GET = re.compile(r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?", re.IGNORECASE)
_V1 = re.compile(r"/v1/.*", re.IGNORECASE | re.DOTALL)
_V2 = re.compile(r"/v2(?:/.*)?", re.DOTALL)
_ORIGIN = re.compile(r"https?://")
JSON = "application/json"
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
    if value > INT64_MAX:
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


class RestApi:
    def __init__(
        self, core: Core, envelope: Envelope, readiness: Readiness, metrics: Metrics, options: RestOptions
    ) -> None:
        self._core = core
        self._envelope = envelope
        self._readiness = readiness
        self._metrics = metrics
        self._options = options
        self.v2: V2Routes | None = None  # the Open Inference Protocol's routes (svc/frontends/rest_v2.py)

    @property
    def core(self) -> Core:
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
        record = self._envelope.start("rest", request.method.lower(), request.headers.get(REQUEST_ID_HEADER))
        record.tf_api = ""
        preflight = request.method == "OPTIONS"  # answered while draining too

        async def call() -> Response:
            if preflight:
                if not _ORIGIN.search(request.headers.get("origin", "")):
                    raise ServingError(Code.FAILED_PRECONDITION, "Origin header is missing in CORS preflight")
                return Response(b"", media_type=JSON)
            try:
                return await (route or self._route)(request, uri, record)
            except ClientDisconnect:  # the client went away mid-body: not a server error (issue 10)
                raise ServingError(Code.CANCELLED, "cancelled") from None

        try:
            response = await self._envelope.run(record, call, gated=not preflight)
        except ServingError as exc:
            status = http_status_of(exc)
            if preflight or exc.code is Code.CANCELLED:
                # TF Serving answers a failed preflight with an empty body; a client gone mid-body gets none.
                response = Response(b"", status_code=status, media_type=JSON if preflight else None)
            else:
                response = json_response(json_tensor.format_error(exc.message), status)
            if isinstance(exc, RequestTimedOut):
                response.headers["connection"] = "close"
        if record.request_id == request.headers.get(REQUEST_ID_HEADER):  # echoed only when sent (issue 11)
            response.headers[REQUEST_ID_HEADER] = record.request_id
        return response

    async def _route(self, request: Request, uri: str, record: RequestRecord) -> Response:
        method = request.method
        if method == "POST" and (m := _POST.fullmatch(uri)):
            name, version, label, verb = m.groups()
            target = Target(unquote(name), _version(version), _decode(label))
            self._note(record, target.name, verb, verb)
            body = await self.read_body(request)
            if verb == "predict":
                return await self.predict(target, body)
            if verb in ("classify", "regress"):
                signature_name, model_input = json_example.parse_classify_regress(body, verb)
                if verb == "classify":
                    request_pb = classify_regress.examples_request(
                        classification_pb2.ClassificationRequest, target, signature_name, model_input
                    )
                    classified = await classify_regress.classify(self._core, request_pb, deadline=self.deadline())
                    return json_response(json_example.format_classify(classified.result))
                regression_pb = classify_regress.examples_request(
                    regression_pb2.RegressionRequest, target, signature_name, model_input
                )
                regressed = await classify_regress.regress(self._core, regression_pb, deadline=self.deadline())
                return json_response(json_example.format_regress(regressed.result))
        elif method == "GET" and (m := _GET.fullmatch(uri)):
            name, version, label, metadata = m.groups()
            if name is None:
                raise invalid_argument("Missing model name in request.")
            target = Target(unquote(name), _version(version), _decode(label))
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
        return self._envelope.deadline(self._options.timeout_ms / 1000 if self._options.timeout_ms > 0 else None)

    async def read_body(self, request: Request) -> bytes:
        limit = self._options.max_request_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise RequestTooLarge(limit)
        chunks: list[bytes] = []
        size = 0
        # A client that starts a body must finish it in time: a slow sender is answered 408 (issue 10).
        with anyio.move_on_after(self._options.read_timeout_seconds) as scope:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise RequestTooLarge(limit)
                chunks.append(chunk)
        if scope.cancelled_caught:
            raise RequestTimedOut(self._options.read_timeout_seconds)
        body = b"".join(chunks)
        if "gzip" in request.headers.get("content-encoding", "").lower():
            try:
                decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
                body = decompressor.decompress(body, limit + 1)
                if len(body) > limit or decompressor.unconsumed_tail:
                    raise RequestTooLarge(limit)
            except (zlib.error, EOFError, gzip.BadGzipFile) as exc:
                raise invalid_argument("Failed to decompress gzip request body") from exc
        return body

    async def predict(self, target: Target, body: bytes) -> Response:
        # The version is leased here, on the event loop, before the body is parsed (in a worker thread when
        # it is big); a lookup error is raised where TF Serving looks the model up: when the parser asks for
        # the signature's inputs, after the JSON itself was read.
        try:
            handle: ServableHandle[Servable] | ServingError = self._core.serving_map.acquire(
                target.name, target.version, target.label
            )
        except ServingError as exc:
            handle = exc
        offload = len(body) > OFFLOAD_JSON_BYTES  # big JSON is parsed and written off the event loop

        def input_map(signature_name: str) -> Mapping[str, int]:
            if isinstance(handle, ServingError):
                raise handle
            note_version(handle.servable)
            return predict_input_map(handle.servable, signature_name)

        try:
            if offload:
                parsed = await anyio.to_thread.run_sync(json_tensor.parse_predict, body, input_map)
            else:
                parsed = json_tensor.parse_predict(body, input_map)
            assert not isinstance(handle, ServingError)  # the parser asked for the input map
            result = await run_predict(
                self._core, handle.servable, parsed.signature_name, parsed.inputs, deadline=self.deadline()
            )
        finally:
            if not isinstance(handle, ServingError):
                handle.release()
        if offload or sum(a.size for a in result.outputs.values()) > OFFLOAD_JSON_ELEMENTS:
            text = await anyio.to_thread.run_sync(
                json_tensor.format_predict, result.outputs, result.dtypes, parsed.format
            )
        else:
            text = json_tensor.format_predict(result.outputs, result.dtypes, parsed.format)
        return json_response(text)

    def metadata(self, target: Target) -> Response:
        request = get_model_metadata_pb2.GetModelMetadataRequest(
            model_spec=target.model_spec(), metadata_field=[model_info.SIGNATURE_DEF_FIELD]
        )
        response = model_info.get_model_metadata(self._core, request)
        return json_response(json_example.format_model_metadata(response))

    def status(self, target: Target) -> Response:
        # GetModelStatus ignores a label, as TF Serving's does: /labels/L lists every version.
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = target.name
        if target.version is not None:
            request.model_spec.version.value = target.version
        response = model_info.get_model_status(self._core, request)
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


def predict_input_map(servable: Servable, signature_name: str) -> Mapping[str, int]:
    """TF Serving's `GetInfoMap`: the signature's input dtypes by alias, for the JSON parser."""
    signature = servable.signatures.get(signature_name_or_default(signature_name))
    if signature is None:
        raise invalid_argument(
            f'Serving signature name: "{signature_name_or_default(signature_name)}" not found in signature def'
        )
    if not signature.inputs:
        raise invalid_argument(f"Failed to get input map for signature: {signature_name or 'DEFAULT'}")
    return {alias: info.dtype for alias, info in signature.inputs.items()}
