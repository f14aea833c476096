#include "worker/transfer/ucx_handles.h"

#include "absl/strings/str_cat.h"

namespace cpserve::transfer {

absl::Status UcsToStatus(ucs_status_t status, const std::string& what) {
  if (status == UCS_OK) return absl::OkStatus();
  const std::string msg = absl::StrCat(what, ": ", ucs_status_string(status));
  switch (status) {
    case UCS_ERR_CANCELED:
      return absl::CancelledError(msg);
    case UCS_ERR_TIMED_OUT:
      return absl::DeadlineExceededError(msg);
    case UCS_ERR_INVALID_PARAM:
      return absl::InvalidArgumentError(msg);
    case UCS_ERR_NO_MEMORY:
    case UCS_ERR_EXCEEDS_LIMIT:
      return absl::ResourceExhaustedError(msg);
    default:
      return absl::UnavailableError(msg);
  }
}

absl::StatusOr<std::string> UcpMemory::PackRkey() const {
  void* buf = nullptr;
  size_t size = 0;
  ucs_status_t st = ucp_rkey_pack(context_, memh_, &buf, &size);
  if (st != UCS_OK) return UcsToStatus(st, "ucp_rkey_pack");
  std::string out(static_cast<const char*>(buf), size);
  ucp_rkey_buffer_release(buf);
  return out;
}

absl::StatusOr<UcpContext> CreateUcpContext(const std::string& name) {
  ucp_config_t* config = nullptr;
  ucs_status_t st = ucp_config_read(nullptr, nullptr, &config);
  if (st != UCS_OK) return UcsToStatus(st, "ucp_config_read");
  ucp_params_t params{};
  params.field_mask = UCP_PARAM_FIELD_FEATURES | UCP_PARAM_FIELD_NAME;
  params.features = UCP_FEATURE_RMA | UCP_FEATURE_AM | UCP_FEATURE_WAKEUP;
  params.name = name.c_str();
  ucp_context_h context = nullptr;
  st = ucp_init(&params, config, &context);
  ucp_config_release(config);
  if (st != UCS_OK) return UcsToStatus(st, "ucp_init");
  return UcpContext(context);
}

absl::StatusOr<UcpWorker> CreateUcpWorker(ucp_context_h context) {
  ucp_worker_params_t params{};
  params.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
  params.thread_mode = UCS_THREAD_MODE_SINGLE;
  ucp_worker_h worker = nullptr;
  ucs_status_t st = ucp_worker_create(context, &params, &worker);
  if (st != UCS_OK) return UcsToStatus(st, "ucp_worker_create");
  return UcpWorker(worker);
}

absl::StatusOr<std::string> WorkerAddress(ucp_worker_h worker) {
  ucp_address_t* addr = nullptr;
  size_t len = 0;
  ucs_status_t st = ucp_worker_get_address(worker, &addr, &len);
  if (st != UCS_OK) return UcsToStatus(st, "ucp_worker_get_address");
  std::string out(reinterpret_cast<const char*>(addr), len);
  ucp_worker_release_address(worker, addr);
  return out;
}

absl::StatusOr<std::unique_ptr<UcpMemory>> MapMemory(ucp_context_h context, void* base,
                                                     size_t bytes) {
  ucp_mem_map_params_t params{};
  params.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH;
  params.address = base;
  params.length = bytes;
  ucp_mem_h memh = nullptr;
  ucs_status_t st = ucp_mem_map(context, &params, &memh);
  if (st != UCS_OK) return UcsToStatus(st, "ucp_mem_map");
  return std::make_unique<UcpMemory>(context, memh);
}

bool ContextSupportsCuda(ucp_context_h context) {
  ucp_context_attr_t attr{};
  attr.field_mask = UCP_ATTR_FIELD_MEMORY_TYPES;
  if (ucp_context_query(context, &attr) != UCS_OK) return false;
  return (attr.memory_types & UCS_BIT(UCS_MEMORY_TYPE_CUDA)) != 0;
}

}  // namespace cpserve::transfer
