"""The `tensorflow_model_server` command line: flags -> `Options`, then the supervisor.

Mirrors `model_servers/main.cc` and TensorFlow's `core/util/command_line_flags.cc`: only `--name=value` is a
flag (no `--name value`, no single dash); a bool flag is `--name`, `--name=true` or `--name=false`, any other
text after its name is a parse error; int32/int64/float values must be whole numbers (no trailing text). A
parse error, or `--help` as the first argument that is not a flag, prints the usage text to stdout and exits
255. Unknown arguments are not fatal: the first one is reported (`unknown argument: <arg>` and the usage) and
the server starts anyway. The last occurrence of a flag wins.

Environment (as the TF Serving Docker image, whose entrypoint passes
`--model_name=${MODEL_NAME} --model_base_path=${MODEL_BASE_PATH}/${MODEL_NAME}`): `MODEL_NAME` is the default
of `--model_name`, `MODEL_BASE_PATH/<model name>` the default of `--model_base_path`; flags win.
`ASPIRED_CUSTOM_OP_MODULES` and `ASPIRED_CUSTOM_OP_LIBRARIES` are the defaults of `--custom_op_modules` and
`--custom_op_libraries` (so an image built with extra packages can name them once).

Importing this module does not import TensorFlow (3+ s): `--version` reads TensorFlow's version from the
installed distribution's metadata.

Subcommands (issue 14): `aspired serve <flags>` is `aspired <flags>`; `aspired predict|classify|regress|
status|metadata|reload|health|warmup-record ...` are the client commands of the TF-free `aspired-client`
package (`clients/python/`, `aspired_client.cli`), which need neither TensorFlow nor this server. Only a
first argument that is one of these words is a subcommand; every TF Serving flag parses as before.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import math
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import Field
from typing import Any, Final

import svc
from svc.errors import ServingError
from svc.options import FLAGS, Options, validate_options

EXIT_USAGE: Final = 255  # TF's main returns -1
PROGRAM: Final = "aspired"
SERVE_COMMAND: Final = "serve"
CLIENT_COMMANDS: Final = (
    "predict", "classify", "regress", "status", "metadata", "reload", "health", "warmup-record"
)  # fmt: skip

_INT_RANGES: Final = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}
_INT = re.compile(r"\s*[+-]?\d+")
_FLOAT = re.compile(r"\s*[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|inf(?:inity)?|nan)", re.IGNORECASE)
_BY_NAME: Final = {flag.name: flag for flag in FLAGS}
_BOOL_FLAGS: Final = tuple(flag for flag in FLAGS if flag.metadata["flag_type"] == "bool")


class UsageError(Exception):
    """The command line cannot be parsed, or `--help` was asked for: print the usage, exit 255."""

    def __init__(self, errors: Sequence[str]) -> None:
        super().__init__("; ".join(errors) or "help requested")
        self.errors = list(errors)


def parse_args(argv: Sequence[str], env: Mapping[str, str]) -> Options:
    """Options from the arguments (without the program name) and the environment's defaults; unknown
    arguments are ignored (see `parse_command_line`). Raises UsageError."""
    options, _unknown = parse_command_line(argv, env)
    return options


def parse_command_line(argv: Sequence[str], env: Mapping[str, str]) -> tuple[Options, list[str]]:
    """Options and the arguments that are not flags, in order. Raises UsageError on a bad flag value or when
    the first unknown argument is `--help` (TF's `Flags::Parse` returning false)."""
    values: dict[str, Any] = {}
    unknown: list[str] = []
    errors: list[str] = []
    for arg in argv:
        match = _match_flag(arg)
        if match is None:
            unknown.append(arg)
            continue
        flag, text = match
        try:
            values[flag.name] = _convert(flag, text)
        except ValueError:
            errors.append(f"Couldn't interpret value {text} for flag {flag.name}.")
    if errors or (unknown and unknown[0] == "--help"):
        raise UsageError(errors)
    _apply_environment(values, env)
    return Options(**values), unknown


def _match_flag(arg: str) -> tuple[Field[Any], str] | None:
    """The flag `arg` sets and its value text (for a bool: the text after the name, "" / "=true" / ...)."""
    if not arg.startswith("--"):
        return None
    name, equals, value = arg[2:].partition("=")
    flag = _BY_NAME.get(name)
    if flag is not None:
        if flag.metadata["flag_type"] == "bool":
            return flag, equals + value
        if equals:
            return flag, value
        return None  # `--port` without `=`: not this flag (TF: unknown argument)
    # TF matches a bool flag by prefix: `--enable_batchingX` is a bad value of enable_batching, not unknown.
    for flag in _BOOL_FLAGS:
        if arg[2:].startswith(flag.name):
            return flag, arg[2 + len(flag.name) :]
    return None


def _convert(flag: Field[Any], text: str) -> Any:
    kind = flag.metadata["flag_type"]
    if kind == "bool":
        if text in ("", "=true"):
            return True
        if text == "=false":
            return False
        raise ValueError(text)
    if kind == "string":
        return text
    if kind in _INT_RANGES:
        low, high = _INT_RANGES[kind]
        if not _INT.fullmatch(text) or not low <= int(text) <= high:
            raise ValueError(text)
        return int(text)
    if kind == "float":
        if not _FLOAT.fullmatch(text):
            raise ValueError(text)
        value = float(text)
        if math.isinf(value) and "inf" not in text.lower():
            raise ValueError(text)  # overflow such as 1e999
        return value
    raise AssertionError(f"unknown flag type {kind}")


_ENVIRONMENT_DEFAULTS: Final = {
    "custom_op_modules": "ASPIRED_CUSTOM_OP_MODULES",
    "custom_op_libraries": "ASPIRED_CUSTOM_OP_LIBRARIES",
}


def _apply_environment(values: dict[str, Any], env: Mapping[str, str]) -> None:
    """MODEL_NAME, MODEL_BASE_PATH and the ASPIRED_* variables as defaults of the flags that were not given."""
    for flag, variable in _ENVIRONMENT_DEFAULTS.items():
        if flag not in values and env.get(variable):
            values[flag] = env[variable]
    if "model_name" not in values and env.get("MODEL_NAME"):
        values["model_name"] = env["MODEL_NAME"]
    if "model_base_path" not in values and env.get("MODEL_BASE_PATH"):
        name = values.get("model_name", _BY_NAME["model_name"].default)
        values["model_base_path"] = f"{env['MODEL_BASE_PATH'].rstrip('/')}/{name}"


def _display_default(flag: Field[Any]) -> str:
    kind = flag.metadata["flag_type"]
    if kind == "bool":
        return "true" if flag.default else "false"
    if kind == "string":
        return f'"{flag.default}"'
    if kind == "float":
        return f"{flag.default:f}"
    return str(flag.default)


def usage_text(program: str = PROGRAM) -> str:
    """TF's `Flags::Usage`: one line per flag, `--name=<default>`, type and help, tab-separated."""
    lines = [f"usage: {program}", "Flags:"]
    for flag in FLAGS:
        flag_string = f"--{flag.name}={_display_default(flag)}"
        lines.append(f"\t{flag_string:<33}\t{flag.metadata['flag_type']}\t{flag.metadata['help']}")
    return "\n".join(lines) + "\n"


def version_text() -> str:
    """`--version`: this server's version and the installed TensorFlow's (from metadata, no import)."""
    tensorflow = "unknown"
    for distribution in ("tensorflow", "tensorflow-cpu", "tf-nightly"):
        try:
            tensorflow = importlib.metadata.version(distribution)
            break
        except importlib.metadata.PackageNotFoundError:
            continue
    return f"TensorFlow ModelServer: {svc.__version__}\nTensorFlow Library: {tensorflow}\n"


def main(argv: Sequence[str] | None = None, *, run: Callable[[Options], int] | None = None) -> int:
    """Parse, check and run; the exit status. `argv` excludes the program name (default `sys.argv[1:]`);
    `run` defaults to `svc.server.run`, imported only once the options are valid."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in CLIENT_COMMANDS:
        return client_command(args)
    if args and args[0] == SERVE_COMMAND:
        args = args[1:]
    try:
        options, unknown = parse_command_line(args, os.environ)
    except UsageError as error:
        for line in error.errors:
            sys.stderr.write(line + "\n")
        sys.stdout.write(usage_text())
        sys.stdout.flush()
        return EXIT_USAGE
    if options.version:
        sys.stdout.write(version_text())
        sys.stdout.flush()
        return 0
    if unknown:
        sys.stdout.write(f"unknown argument: {unknown[0]}\n{usage_text()}")
    try:
        validate_options(options)
    except ServingError as error:
        sys.stdout.write(f"Failed to start server. Error: {error.status_text()}\n")
        sys.stdout.flush()
        return EXIT_USAGE
    sys.stdout.flush()
    if run is None:
        # Imported here: the supervisor pulls in the whole server (and TensorFlow).
        run = importlib.import_module("svc.server").run
    return run(options)


def client_command(args: Sequence[str]) -> int:
    """Run a client subcommand with the aspired-client package (exit 2 with a hint where it is missing)."""
    try:
        client_cli = importlib.import_module("aspired_client.cli")
    except ModuleNotFoundError as error:
        if error.name is None or not "aspired_client".startswith(error.name):
            raise
        sys.stderr.write(f"{PROGRAM} {args[0]}: needs the aspired-client package (pip install ./clients/python)\n")
        return 2
    status: int = client_cli.main(list(args), program=PROGRAM)
    return status
