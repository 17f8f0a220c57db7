"""The text-format config files of TF Serving: parsing them (`parse_text_config`, with TF's file and parse
errors) and validating a ModelServerConfig as `ServerCore::ReloadConfig` does (`server_core.cc`).

Pure: functions read files and return protobuf messages or raise `ServingError` with TF Serving's message
texts. Which files the flags name is `svc/options.py`'s business.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final, TypeAlias, TypeVar

from google.protobuf import message, text_format
from tensorflow_serving.config import model_server_config_pb2

from svc._proto.aspired import config_pb2
from svc.errors import Code, ServingError, failed_precondition, invalid_argument, unimplemented

ModelServerConfig: TypeAlias = model_server_config_pb2.ModelServerConfig
ModelConfig: TypeAlias = model_server_config_pb2.ModelConfig
BatchingParameters: TypeAlias = config_pb2.BatchingParameters
MonitoringConfig: TypeAlias = config_pb2.MonitoringConfig
SSLConfig: TypeAlias = config_pb2.SSLConfig

TENSORFLOW_PLATFORM: Final = "tensorflow"

_M = TypeVar("_M", bound=message.Message)


def parse_text_config(source: Path | str, message_class: type[_M]) -> _M:
    """Parse a text-format message: `source` is a file when it is a `Path`, the text itself when a `str`.

    Errors: the file cannot be read -> NOT_FOUND / PERMISSION_DENIED / UNKNOWN `<path>; <reason>` (TF's
    file errors); bad text -> INVALID_ARGUMENT
    `Error parsing text-format <full message name>: <line>:<col> : <what>` (protobuf's own text, as TF
    Serving logs it), followed by ` (file: <path>)` for a file.
    """
    suffix = ""
    if isinstance(source, Path):
        text = read_text_file(source)
        suffix = f" (file: {source})"
    else:
        text = source
    parsed: _M = message_class()
    try:
        text_format.Parse(text, parsed)
    except text_format.ParseError as error:
        name = message_class.DESCRIPTOR.full_name
        raise invalid_argument(f"Error parsing text-format {name}: {error}{suffix}") from error
    return parsed


def read_text_file(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError as error:
        raise ServingError(Code.NOT_FOUND, f"{path}; No such file or directory") from error
    except PermissionError as error:
        raise ServingError(Code.PERMISSION_DENIED, f"{path}; Permission denied") from error
    except (OSError, UnicodeDecodeError) as error:
        raise ServingError(Code.UNKNOWN, f"{path}; {error}") from error


_URI_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9.]*://")


def is_absolute_path_or_uri(base_path: str) -> bool:
    """TF's `!UriIsRelativePath`: `scheme://...` (scheme `[A-Za-z][A-Za-z0-9.]*`) or a path from `/`."""
    return bool(_URI_SCHEME.match(base_path)) or base_path.startswith("/")


def model_platform(model: ModelConfig) -> str:
    """TF's `GetPlatform`: `model_platform`, or the deprecated `model_type` mapped to a platform."""
    if model.model_type != model_server_config_pb2.MODEL_TYPE_UNSPECIFIED:
        if model.model_platform:
            raise invalid_argument(
                "Illegal setting both ModelServerConfig::model_type (deprecated) and "
                f"ModelServerConfig::model_platform, model name is {model.name}"
            )
        if model.model_type != model_server_config_pb2.TENSORFLOW:
            raise invalid_argument(f"ModelServerConfig::model_type choice {model.model_type} not supported.")
        return TENSORFLOW_PLATFORM
    if not model.model_platform:
        raise invalid_argument(
            "Illegal setting neither ModelServerConfig::model_type (deprecated) nor "
            f"ModelServerConfig::model_platform, model name is {model.name}"
        )
    return str(model.model_platform)


def validate_model_server_config(
    config: ModelServerConfig,
    previous: ModelServerConfig | None = None,
    *,
    reload_request: bool = False,
) -> None:
    """Check a config before it replaces `previous` (None or an empty config: the first one), as
    `ServerCore::ReloadConfig` does; `reload_request=True` adds ModelService.HandleReloadConfigRequest's own
    check (only a ModelConfigList). An empty config passes (nothing to load). Raises ServingError."""
    kind = config.WhichOneof("config")
    if reload_request and kind != "model_config_list":
        raise invalid_argument(
            "ServerModelConfig type not supported by HandleReloadConfigRequest. "
            "Only ModelConfigList is currently supported"
        )
    previous_kind = previous.WhichOneof("config") if previous is not None else None
    first_or_same = previous is None or previous_kind is None or config == previous
    if not first_or_same and not previous_kind == kind == "model_config_list":
        raise failed_precondition(
            "Cannot transition to requested config. It is only legal to transition "
            "from one ModelConfigList to another."
        )
    if kind == "custom_model_config":
        raise unimplemented("ModelServer does not yet support custom model config.")
    if kind is None:
        return
    models = config.model_config_list.config
    names: set[str] = set()
    for model in models:
        if model.name in names:
            raise invalid_argument(f"Illegal to list model {model.name} multiple times in config list")
        names.add(model.name)
    for model in models:
        if not is_absolute_path_or_uri(model.base_path):
            raise invalid_argument(
                f"Expected model {model.name} to have an absolute path or URI; "
                f"got base_path()={model.base_path}"
            )
    if previous is not None and previous_kind == "model_config_list":
        old_platforms = {model.name: model_platform(model) for model in previous.model_config_list.config}
        for model in models:
            if model.name in old_platforms and model_platform(model) != old_platforms[model.name]:
                raise invalid_argument(
                    f"Illegal to change a model's platform. For model {model.name} platform was "
                    f"{old_platforms[model.name]} and new platform requested is {model_platform(model)}"
                )
    for model in models:
        platform = model_platform(model)
        if platform != TENSORFLOW_PLATFORM:
            raise invalid_argument(f"Model {model.name} requests unsupported platform {platform}")
