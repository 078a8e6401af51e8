"""Runtime switches.

check_device_inputs: before launching, read back the device-side metadata that shapes cannot
validate (cu_seqlens, block_table, cache_seqlens, cache_batch_idx) and raise ValueError if it
is out of range. Costs one small reduction and one device synchronisation per call; turn it
off for CUDA-graph capture and latency-critical serving (the kernels clamp out-of-range
metadata, so a bad value then gives wrong numbers but no out-of-bounds access).
Environment: FLASHGEN_CHECK_INPUTS=0 turns it off.
"""

import os

check_device_inputs: bool = os.environ.get("FLASHGEN_CHECK_INPUTS", "1") not in ("0", "false", "False")
