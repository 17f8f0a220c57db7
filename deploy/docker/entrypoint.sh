#!/bin/sh
# The image's entrypoint, as TF Serving's (tf_serving_entrypoint.sh): the environment becomes the
# tensorflow_model_server flags, and the container's arguments are appended, so they win (the last occurrence of
# a flag wins). MODEL_BASE_PATH may be a URI (s3://bucket/models): the base path is $MODEL_BASE_PATH/$MODEL_NAME.
# With --model_config_file among the arguments, --model_name and --model_base_path are ignored, as in TF Serving.
set -eu

: "${MODEL_NAME:=model}"
: "${MODEL_BASE_PATH:=/models}"

exec aspired \
    --port=8500 \
    --rest_api_port=8501 \
    --model_name="${MODEL_NAME}" \
    --model_base_path="${MODEL_BASE_PATH%/}/${MODEL_NAME}" \
    "$@"
