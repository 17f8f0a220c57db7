"""GetModelMetadata and GetModelStatus.

Mirrors TF Serving's `servables/tensorflow/get_model_metadata_impl.cc` and
`model_servers/get_model_status_impl.cc`: the same validation order and error texts. Metadata reads a leased
servable's SignatureDefs; status reads the StateMonitor, so it also lists versions that are not serving.
"""

from __future__ import annotations

from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2

from svc.errors import invalid_argument, not_found
from svc.inference.core import Core, lease, target_of

SIGNATURE_DEF_FIELD = "signature_def"


def get_model_metadata(
    core: Core, request: get_model_metadata_pb2.GetModelMetadataRequest
) -> get_model_metadata_pb2.GetModelMetadataResponse:
    if not request.HasField("model_spec"):
        raise invalid_argument("Missing ModelSpec")
    if not request.metadata_field:
        raise invalid_argument("GetModelMetadataRequest must specify at least one metadata_field")
    for field in request.metadata_field:
        if field != SIGNATURE_DEF_FIELD:
            raise invalid_argument(f"Metadata field {field} is not supported")
    with lease(core, target_of(request.model_spec)) as servable:
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for key, signature in servable.signatures.items():
            signature_map.signature_def[key].CopyFrom(signature)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = servable.name
        response.model_spec.version.value = servable.version
        response.metadata[SIGNATURE_DEF_FIELD].Pack(signature_map)
        return response


def get_model_status(
    core: Core, request: get_model_status_pb2.GetModelStatusRequest
) -> get_model_status_pb2.GetModelStatusResponse:
    if not request.HasField("model_spec"):
        raise invalid_argument("Missing ModelSpec")
    spec = request.model_spec
    versions = core.monitor.versions(spec.name)
    response = get_model_status_pb2.GetModelStatusResponse()
    if spec.WhichOneof("version_choice") == "version":
        version = spec.version.value
        if version not in versions:
            raise not_found(f"Could not find version {version} of model {spec.name}")
        chosen = {version: versions[version]}
    else:
        if not versions:
            raise not_found(f"Could not find any versions of model {spec.name}")
        chosen = dict(versions)
    for version, status in chosen.items():
        entry = response.model_version_status.add()
        entry.version = version
        entry.state = int(status.state)
        entry.status.error_code = int(status.code)
        entry.status.error_message = status.message
    return response
