#!/usr/bin/env bash
# cuDNN's own FP8 SDPA forward and paged decode through cudnn-frontend (../shared/peers/*.py,
# the peers that torch SDPA does not expose), for the same GPU call as flashgen's FP8 and decode
# benchmarks. Needs the nvidia-cudnn-frontend wheel for Python 3.12 in .whl/ (carry .whl):
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 nvidia-cudnn-frontend==1.32.0 -d .whl
#   PEERS="fp8 paged" tools/gpu_cudnn_peers.sh       (results: $OUT/cudnn_fp8.json, cudnn_paged_decode.json)
# The peer scripts live outside the repository (../shared/peers); the device tool copies only
# the working tree, so copy them in as untracked files before the call (cp -r ../shared/peers
# tools/_peers) or set PEERS_DIR.
set -uo pipefail
OUT=${OUT:-$PWD/out}
mkdir -p "$OUT"
export OUT
PEERS_DIR=${PEERS_DIR:-}
for d in tools/_peers shared/peers ../shared/peers; do
  [[ -z "$PEERS_DIR" && -d "$d" ]] && PEERS_DIR=$d
done
[[ -n "$PEERS_DIR" ]] || { echo "no peer scripts (tools/_peers, shared/peers or ../shared/peers)"; exit 2; }
wheel=$(compgen -G ".whl/nvidia_cudnn_frontend-*.whl" | head -1)
[[ -n "$wheel" ]] || { echo "no nvidia_cudnn_frontend wheel in .whl/"; exit 2; }
python3 -m pip install -q --no-index --no-deps --target /tmp/cudnn_site "$wheel" || exit 1
export PYTHONPATH=/tmp/cudnn_site${PYTHONPATH:+:$PYTHONPATH}
# cudnn-frontend loads libcudnn at run time: point it at the cuDNN that torch ships.
cudnn_lib=$(python3 -c "import os, nvidia.cudnn as c; print(os.path.join(list(c.__path__)[0], 'lib'))" 2>/dev/null)
[[ -n "$cudnn_lib" ]] && export LD_LIBRARY_PATH=$cudnn_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
for peer in ${PEERS:-fp8 paged}; do
  case $peer in
    fp8) script=cudnn_fp8_sdpa.py ;;
    paged) script=cudnn_paged_decode.py ;;
    *) echo "unknown peer $peer"; continue ;;
  esac
  echo "== cuDNN peer: $script"
  timeout "${PEER_TIMEOUT:-240}" python3 "$PEERS_DIR/$script" 2>&1 | tail -40
done
