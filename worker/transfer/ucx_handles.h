// RAII owners of UCX (ucp) handles. Every UCX object the agent creates is held
// by one of these; destruction order is the reverse of creation.
#pragma once

#include <ucp/api/ucp.h>

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace cpserve::transfer {

// absl status for a UCX status (UCS_OK -> OK).
absl::Status UcsToStatus(ucs_status_t status, const std::string& what);

struct UcpContextDeleter {
  void operator()(ucp_context_h c) const { ucp_cleanup(c); }
};
using UcpContext = std::unique_ptr<std::remove_pointer_t<ucp_context_h>, UcpContextDeleter>;

struct UcpWorkerDeleter {
  void operator()(ucp_worker_h w) const { ucp_worker_destroy(w); }
};
using UcpWorker = std::unique_ptr<std::remove_pointer_t<ucp_worker_h>, UcpWorkerDeleter>;

// A registered memory region (ucp_mem_map); unmapped on destruction.
class UcpMemory {
 public:
  UcpMemory(ucp_context_h context, ucp_mem_h memh) : context_(context), memh_(memh) {}
  UcpMemory(const UcpMemory&) = delete;
  UcpMemory& operator=(const UcpMemory&) = delete;
  ~UcpMemory() { ucp_mem_unmap(context_, memh_); }
  ucp_mem_h get() const { return memh_; }
  // Packed remote key of the region, for a peer's ucp_ep_rkey_unpack.
  absl::StatusOr<std::string> PackRkey() const;

 private:
  ucp_context_h context_;
  ucp_mem_h memh_;
};

struct UcpRkeyDeleter {
  void operator()(ucp_rkey_h k) const { ucp_rkey_destroy(k); }
};
using UcpRkey = std::unique_ptr<std::remove_pointer_t<ucp_rkey_h>, UcpRkeyDeleter>;

// Creates a context with RMA + active messages + wakeup features.
absl::StatusOr<UcpContext> CreateUcpContext(const std::string& name);
// Creates a single-threaded worker (only the agent's progress thread touches it).
absl::StatusOr<UcpWorker> CreateUcpWorker(ucp_context_h context);
// The worker's address as bytes (ucp_worker_get_address).
absl::StatusOr<std::string> WorkerAddress(ucp_worker_h worker);
// Registers [base, base+bytes) for remote access.
absl::StatusOr<std::unique_ptr<UcpMemory>> MapMemory(ucp_context_h context, void* base,
                                                     size_t bytes);
// Whether the UCX build can register CUDA device memory (UCS_MEMORY_TYPE_CUDA).
bool ContextSupportsCuda(ucp_context_h context);

}  // namespace cpserve::transfer
