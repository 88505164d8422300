#!/usr/bin/env bash
# Multi-process training through torch.distributed's launcher, as mmpretrain's tools/dist_train.sh:
#   bash tools/dist_train.sh CONFIG NUM_PROCESSES [train.py options]
# NNODES, NODE_RANK, MASTER_ADDR and PORT select a multi-node run; PYTHON the interpreter (default: python).
# MAX_RESTARTS=K restarts the whole job up to K times when a process fails (torch's elastic agent). With train.py's
# --resume, the restarted processes continue from the last complete checkpoint in the work dir (or start afresh).
set -euo pipefail
CONFIG=$1
NPROC=$2
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
PORT=${PORT:-29500}
if [ "${MAX_RESTARTS:-0}" -gt 0 ]; then
    # Restarts rendezvous through c10d, with a store of its own for each round (measured with torch 2.14 and gloo:
    # the static rendezvous keeps the store across restarts, so the restarted processes read the dead ones'
    # addresses and fail in connectFullMesh; with the shared c10d store they wait forever)
    export TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1
    RENDEZVOUS=(--rdzv-backend=c10d --rdzv-endpoint="$MASTER_ADDR:$PORT" --rdzv-id="${RDZV_ID:-pic_plugin}"
                --max-restarts="$MAX_RESTARTS")
else
    RENDEZVOUS=(--node_rank="${NODE_RANK:-0}" --master_addr="$MASTER_ADDR" --master_port="$PORT")
fi
PYTHONPATH="$(dirname "$0")/..${PYTHONPATH:+:$PYTHONPATH}" \
"${PYTHON:-python}" -m torch.distributed.run \
    --nnodes="${NNODES:-1}" \
    "${RENDEZVOUS[@]}" \
    --nproc_per_node="$NPROC" \
    "$(dirname "$0")/train.py" "$CONFIG" --launcher pytorch "${@:3}"
