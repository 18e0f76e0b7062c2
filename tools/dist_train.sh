#!/usr/bin/env bash
# Usage: bash tools/dist_train.sh CONFIG NUM_PROCESSES [train.py args...]
# PYTHON: the interpreter (default: python on PATH).
# One process per GPU; without CUDA, NUM_PROCESSES CPU processes (gloo backend).
# Multi-node: set NNODES, NODE_RANK, MASTER_ADDR, PORT.
set -e
CONFIG=$1
GPUS=$2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}

# exec: the launcher is this process, so a signal to the script reaches torchrun, and
# workers (which exit when their launcher dies: mmseg_segman.engine.dist, armed by
# tools/train.py and tools/test.py) follow it.
exec "${PYTHON:-python}" -m torch.distributed.run \
    --nnodes="$NNODES" \
    --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$GPUS" \
    --master_port="$PORT" \
    "$(dirname "$0")/train.py" \
    "$CONFIG" \
    --launcher pytorch "${@:3}"
