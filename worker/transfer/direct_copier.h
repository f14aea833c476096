// Direct KV copies between transfer agents on one host, beside UCX (DESIGN §5:
// "ranks on the same host may use CUDA IPC"). The agent keeps its UCX control
// protocol (BEGIN / ACCEPT / DONE, deadlines, cancels, peer failure) and, when a
// push goes direct, moves the bytes with the copier instead of UCX puts. The one
// implementation is CUDA IPC (worker/engine/cuda_ipc_copier.h); worker/transfer
// itself stays free of CUDA.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace cpserve::transfer {

class DirectCopier {
 public:
  virtual ~DirectCopier() = default;

  // Transfer path label, e.g. "cuda-ipc".
  virtual const char* name() const = 0;
  // This agent's KV memory as a peer on the same host opens it (opaque bytes,
  // carried in KvDestination.direct).
  virtual std::string Export() const = 0;
  // This agent's KV memory: the base the region's offsets apply to.
  virtual char* local_base() const = 0;
  // A peer's exported KV memory mapped into this process (cached; thread-safe), or
  // UNAVAILABLE when it cannot be reached directly (another host or container, a
  // handle that does not open) — the caller then uses UCX.
  virtual absl::StatusOr<char*> Open(const std::string& exported) = 0;
  // Queues a copy of `bytes` from local `src` to peer memory `dst` (from Open).
  virtual absl::Status Copy(char* dst, const char* src, uint64_t bytes) = 0;
  // Waits until every queued copy has landed. The caller orders the copies after
  // the local writes they read (the engine synchronises its stream before a push).
  virtual absl::Status Wait() = 0;
};

}  // namespace cpserve::transfer
