"""The Open Inference Protocol (KServe V2) over REST, on the REST port beside TF Serving's `/v1` routes.

`GET /v2`, `/v2/health/live`, `/v2/health/ready` (the readiness of `/readyz`), `GET /v2/models/{m}
[/versions/{v}]` (metadata), `.../ready`, `POST .../infer` (JSON tensors and the binary tensor data
extension), and the repository extension: `POST /v2/repository/index`, `/v2/repository/models/{m}/load`,
`/unload`. Requests other than the health probes go through the REST envelope (request record, drain gate,
`ServingError` -> `{"error": ...}` with the status of `svc.errors`); the logic is
`svc.inference.open_inference`, on the same path as Predict.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import anyio
from starlette.requests import Request
from starlette.responses import Response

from svc.errors import invalid_argument, not_found
from svc.inference import open_inference as v2
from svc.lifecycle.readiness import Readiness
from svc.request_context import RequestRecord
from svc.wire import v2_request

if TYPE_CHECKING:
    from svc.frontends.rest import RestApi

V2_PATH = re.compile(r"/v2(?:/.*)?", re.DOTALL)
_MODEL = re.compile(r"/v2/models/([^/]+)(?:/versions/([^/]+))?(?:/(ready|infer))?")
_REPOSITORY = re.compile(r"/v2/repository/models/([^/]+)/(load|unload)")
HEADER_LENGTH = "inference-header-content-length"
JSON = "application/json"
OFFLOAD_BYTES = 64 * 1024  # bodies above this are decoded and answered in a worker thread


def _json(doc: Any, status: int = 200) -> Response:
    return Response(json.dumps(doc, separators=(",", ":")).encode(), status_code=status, media_type=JSON)


class V2Routes:
    def __init__(self, rest: RestApi, readiness: Readiness, repository: v2.ModelRepository | None) -> None:
        self._rest = rest
        self._readiness = readiness
        self._repository = repository

    def probe(self, path: str) -> Response | None:
        """The health probes, answered without a request record (like `/livez` and `/readyz`)."""
        if path == "/v2/health/live":
            return Response(b"", status_code=200)
        if path == "/v2/health/ready":
            return Response(b"", status_code=200 if self._readiness.ready() else 400)
        return None

    async def route(self, request: Request, uri: str, record: RequestRecord) -> Response:
        path, method = uri.split("?", 1)[0], request.method
        core = self._rest.core
        if path == "/v2" and method == "GET":
            record.api = "server_metadata"
            meta = v2.ServerMetadata()
            return _json({"name": meta.name, "version": meta.version, "extensions": list(meta.extensions)})
        if m := _MODEL.fullmatch(path):
            name, version, verb = unquote(m[1]), unquote(m[2] or ""), m[3]
            record.model = name
            if verb is None and method == "GET":
                record.api = "model_metadata"
                return _json(_metadata_doc(v2.model_metadata(core, name, version)))
            if verb == "ready" and method == "GET":
                record.api = "model_ready"
                return Response(b"", status_code=200 if v2.model_ready(core, name, version) else 400)
            if verb == "infer" and method == "POST":
                record.api = "infer"
                return await self.infer(request, name, version)
        if path == "/v2/repository/index" and method == "POST":
            record.api = "repository_index"
            doc = await self._body_doc(request)
            ready = doc.get("ready", False)
            if not isinstance(ready, bool):
                raise invalid_argument("'ready' must be a boolean")
            entries = await v2.index(core, self._repository, ready)
            return _json([_index_doc(e) for e in entries])
        if (m := _REPOSITORY.fullmatch(path)) and method == "POST":
            name, action = unquote(m[1]), m[2]
            record.model, record.api = name, f"repository_{action}"
            doc = await self._body_doc(request)
            parameters = doc.get("parameters") or {}
            if not isinstance(parameters, dict):
                raise invalid_argument("'parameters' must be an object")
            if action == "load":
                await v2.load(self._repository, name, parameters)
            else:
                await v2.unload(self._repository, name, parameters)
            return Response(b"", status_code=200)
        raise not_found(f"Not found: {method} {path}")

    async def _body_doc(self, request: Request) -> dict[str, Any]:
        body = await self._rest.read_body(request)
        if not body.strip():
            return {}
        try:
            doc = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise invalid_argument(f"failed to parse the request JSON buffer: {exc}") from None
        if not isinstance(doc, dict):
            raise invalid_argument("the request JSON must be an object")
        return doc

    async def infer(self, request: Request, name: str, version: str) -> Response:
        body = await self._rest.read_body(request)
        header = request.headers.get(HEADER_LENGTH)
        header_length = None
        if header is not None:
            if not header.strip().isdigit():
                raise invalid_argument(f"Inference-Header-Content-Length is not a number: {header}")
            header_length = int(header)
        big = len(body) > OFFLOAD_BYTES
        if big:
            parsed = await anyio.to_thread.run_sync(
                v2_request.parse_json_request, body, header_length, name, version
            )
        else:
            parsed = v2_request.parse_json_request(body, header_length, name, version)
        result = await v2.infer(self._rest.core, parsed, deadline=self._rest.deadline())
        if big or sum(o.array.size for o in result.outputs) > 8192:
            text, json_length = await anyio.to_thread.run_sync(v2_request.format_json_response, result, parsed)
        else:
            text, json_length = v2_request.format_json_response(result, parsed)
        if json_length is None:
            return Response(text, media_type=JSON)
        return Response(
            text, media_type="application/octet-stream", headers={"Inference-Header-Content-Length": str(json_length)}
        )


def _metadata_doc(meta: v2.ModelMetadata) -> dict[str, Any]:
    def tensors(items: tuple[v2.TensorMetadata, ...]) -> list[dict[str, Any]]:
        return [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in items]

    return {
        "name": meta.name, "versions": list(meta.versions), "platform": meta.platform,
        "inputs": tensors(meta.inputs), "outputs": tensors(meta.outputs),
    }


def _index_doc(entry: v2.IndexEntry) -> dict[str, str]:
    doc = {"name": entry.name, "state": entry.state, "reason": entry.reason}
    if entry.version:
        doc["version"] = entry.version
    return doc
