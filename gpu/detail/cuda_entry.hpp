// The one door into the CUDA backend, compiled only when the build has CUDA. Plain C++: the
// CUDA headers stay inside gpu/cuda/.
#pragma once

#include <memory>
#include <string>

#include "gpu/backend.hpp"

namespace mws::gpu::detail {

// The CUDA backend on the first usable device, or null with `why` saying what was missing
// (no driver, no device, out of memory, ...). Never throws.
std::unique_ptr<backend> make_cuda_backend(std::string& why);

}  // namespace mws::gpu::detail
