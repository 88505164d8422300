#!/usr/bin/env bash
# Multi-process training through torch.distributed's launcher, as mmpretrain's tools/dist_train.sh:
#   bash tools/dist_train.sh CONFIG NUM_PROCESSES [train.py options]
# NNODES, NODE_RANK, MASTER_ADDR and PORT select a multi-node run; PYTHON the interpreter (default: python).
set -euo pipefail
CONFIG=$1
NPROC=$2
PYTHONPATH="$(dirname "$0")/..${PYTHONPATH:+:$PYTHONPATH}" \
"${PYTHON:-python}" -m torch.distributed.run \
    --nnodes="${NNODES:-1}" \
    --node_rank="${NODE_RANK:-0}" \
    --master_addr="${MASTER_ADDR:-127.0.0.1}" \
    --master_port="${PORT:-29500}" \
    --nproc_per_node="$NPROC" \
    "$(dirname "$0")/train.py" "$CONFIG" --launcher pytorch "${@:3}"
