// Error reporting shared by the C API and the kernel launchers.
#pragma once

#include <cuda_runtime_api.h>

#include "flashgen/flashgen.h"

namespace flashgen {

// This thread's last error message ("" if none), and its reset at the start of each call.
const char* last_error();
void clear_error();

// Records a printf-style message as this thread's last error and returns status.
flashgen_status_t set_error(flashgen_status_t status, const char* format, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

// Checks that the library holds machine code of `kernel` for the current device and raises
// its dynamic shared-memory limit to smem_bytes when that exceeds the 48 KiB default.
flashgen_status_t prepare_kernel(const void* kernel, int smem_bytes);

// Turns the error state after a kernel launch into a status.
flashgen_status_t check_launch(const char* what);

}  // namespace flashgen
