"""The REST frontend: TF Serving's `/v1/models/...` API on starlette (served by hypercorn, HTTP/1.1 + h2c).

Mirrors `model_servers/http_rest_api_handler.cc` and `http_server.cc`: the same URL regexes (matched on the
raw path, query string included, case-insensitively), the same dispatch, status codes and `{"error": ...}`
bodies. JSON <-> tensor conversion lives in `svc.json_tensor`; the request logic in `svc.api`.
"""

from __future__ import annotations

import gzip
import re
import zlib
from collections.abc import Mapping
from urllib.parse import unquote

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2

from svc import api, json_tensor
from svc.errors import Code, ServingError, http_status, invalid_argument
from svc.logging import get_logger
from svc.servable import Servable

log = get_logger(frontend="rest")

_POST = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)", re.IGNORECASE
)
_GET = re.compile(r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?", re.IGNORECASE)
_V1 = re.compile(r"/v1/.*", re.IGNORECASE | re.DOTALL)
_INT64_MAX = 2**63 - 1
JSON = "application/json"


def json_response(body: bytes, status: int = 200) -> Response:
    return Response(body, status_code=status, media_type=JSON)


def error_response(exc: ServingError) -> Response:
    return json_response(json_tensor.format_error(exc.message), http_status(exc.code))


def _version(text: str | None) -> int | None:
    if text is None:
        return None
    value = int(text)
    if value > _INT64_MAX:
        raise invalid_argument(f"Failed to convert version: {text} to numeric.")
    return value


def _decode(text: str | None) -> str | None:
    return None if text is None else unquote(text)


async def read_body(request: Request) -> bytes:
    body = await request.body()
    if "gzip" in request.headers.get("content-encoding", "").lower():
        try:
            body = gzip.decompress(body)
        except (OSError, EOFError, zlib.error) as exc:
            raise invalid_argument("Failed to decompress gzip request body") from exc
    return body


class RestApi:
    def __init__(self, core: api.Core) -> None:
        self._core = core

    def app(self) -> Starlette:
        methods = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]
        return Starlette(routes=[Route("/{path:path}", self.dispatch, methods=methods)])

    async def dispatch(self, request: Request) -> Response:
        raw = request.scope.get("raw_path") or request.url.path.encode()
        path = raw.decode("latin-1")
        if request.url.query:
            path = f"{path}?{request.url.query}"
        if not _V1.fullmatch(path):
            return Response("Not Found", status_code=404, media_type="text/html")
        try:
            return await self._route(request, path)
        except ServingError as exc:
            return error_response(exc)
        except Exception:
            log.exception("request_crashed", path=path)
            return json_response(json_tensor.format_error("Internal error"), 500)

    async def _route(self, request: Request, path: str) -> Response:
        method = request.method
        if method == "POST" and (m := _POST.fullmatch(path)):
            name, version, label, verb = m.groups()
            target = api.Target(unquote(name), _version(version), _decode(label))
            if verb == "predict":
                return await self.predict(target, await read_body(request))
            if verb in ("classify", "regress"):
                raise ServingError(
                    Code.UNIMPLEMENTED, f"{verb} is not implemented by this server yet"
                )
        elif method == "GET" and (m := _GET.fullmatch(path)):
            name, version, label, metadata = m.groups()
            if name is None:
                raise invalid_argument("Missing model name in request.")
            target = api.Target(unquote(name), _version(version), _decode(label))
            if metadata == "metadata":
                return self.metadata(target)
            if metadata is None:
                return self.status(target)
        raise invalid_argument(f"Malformed request: {method} {path}")

    async def predict(self, target: api.Target, body: bytes) -> Response:
        held: list[Servable] = []

        def input_map(signature_name: str) -> Mapping[str, int]:
            servable = api.acquire(self._core, target)
            held.append(servable)
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
            parsed = json_tensor.parse_predict(body, input_map)
            result = await api.run_predict(self._core, held[0], parsed.signature_name, parsed.inputs)
            return json_response(json_tensor.format_predict(result.outputs, result.dtypes, parsed.format))
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
        return json_response(json_tensor.format_model_metadata(response))

    def status(self, target: api.Target) -> Response:
        # GetModelStatus ignores a label, as TF Serving's does: /labels/L lists every version.
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = target.name
        if target.version is not None:
            request.model_spec.version.value = target.version
        response = api.get_model_status(self._core, request)
        return json_response(json_tensor.format_model_status(response))
