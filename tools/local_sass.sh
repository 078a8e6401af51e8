#!/usr/bin/env bash
# SASS without a GPU machine: this machine's minimal CUDA has nvcc and ptxas but no cuobjdump /
# nvdisasm; PyPI's nvidia-cuda-cuobjdump and nvidia-cuda-nvdisasm wheels carry both. Fetches them
# once into $TOOLS (default /tmp/flashgen-sass-tools), then dumps the SASS of each object or
# cubin given (e.g. `nvcc -gencode=arch=compute_90a,code=sm_90a -cubin k.cu -o k.cubin`).
#   tools/local_sass.sh k.cubin > k.sass        then: python3 tools/sass_loops.py k.sass
set -euo pipefail
TOOLS=${TOOLS:-/tmp/flashgen-sass-tools}
bin=$TOOLS/nvidia/cu13/bin
if [[ ! -x $bin/cuobjdump || ! -x $bin/nvdisasm ]]; then
  mkdir -p "$TOOLS"
  python3 -m pip download -q --no-deps nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm -d "$TOOLS/wheels" >&2
  for w in "$TOOLS"/wheels/*.whl; do python3 -m zipfile -e "$w" "$TOOLS"; done
  chmod +x "$bin"/cuobjdump "$bin"/nvdisasm
fi
PATH=$bin:$PATH exec cuobjdump --dump-sass "$@"
