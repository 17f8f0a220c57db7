"""HandleReloadConfigRequest: TF Serving's `model_servers/model_service_impl.cc` over `ServerCore::ReloadConfig`
(here the ConfigWatcher, reached through the `Reloader` protocol)."""

from __future__ import annotations

from tensorflow_serving.apis import model_management_pb2

from svc.errors import Code, ServingError
from svc.inference.core import Core


async def reload_config(
    core: Core, request: model_management_pb2.ReloadConfigRequest
) -> model_management_pb2.ReloadConfigResponse:
    """Answers once the added models are AVAILABLE or failed."""
    if core.reloader is None:
        raise ServingError(Code.UNIMPLEMENTED, "Config reload is not available")
    names = list(request.metric_names)
    before = {n: core.metrics.int64_value(n) for n in names} if core.metrics is not None else {}
    await core.reloader.reload(request.config, request=True)
    response = model_management_pb2.ReloadConfigResponse()
    response.status.error_code = Code.OK
    # TF Serving: for each requested metric name, the increase of that int64 TF metric during the reload.
    for name in names:
        start = before.get(name)
        end = core.metrics.int64_value(name) if core.metrics is not None else None
        if start is None or end is None:
            continue
        metric = response.metric.add()
        metric.name = name
        metric.int64_value_increase = end - start
    return response
