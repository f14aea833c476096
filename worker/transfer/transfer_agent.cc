#include "worker/transfer/transfer_agent.h"

#include <glog/logging.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <thread>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "worker/transfer/ucx_handles.h"

namespace cpserve::transfer {
namespace {

constexpr unsigned kAmId = 7;
using Notice = v1::KvTransferNotice;

absl::Status NoticeStatus(const Notice& n) {
  return absl::Status(static_cast<absl::StatusCode>(n.code()), n.message());
}

// A future's final value, shared between the progress thread and waiters.
struct Outcome {
  std::mutex mu;
  std::condition_variable cv;
  std::optional<absl::Status> status;
  void Set(absl::Status s) {
    std::lock_guard<std::mutex> lock(mu);
    if (!status) status = std::move(s);
    cv.notify_all();
  }
};

}  // namespace

// Everything below runs on the progress thread unless marked otherwise.
class TransferAgent::Impl {
 public:
  struct Endpoint {
    std::string address;
    ucp_ep_h ep = nullptr;
    bool failed = false;
  };
  using EpPtr = std::shared_ptr<Endpoint>;

  struct SendTransfer {
    std::string id;
    PushRequest req;
    std::vector<TransferRun> runs;
    std::vector<EpPtr> eps;  // per dst rank
    std::vector<UcpRkey> rkeys;
    std::vector<char*> direct_dsts;  // per dst rank, when req.direct
    bool puts_posted = false, aborting = false, dones_started = false;
    int accepts_pending = 0, flushes_pending = 0, dones_pending = 0;
    absl::Status status;
    std::promise<absl::Status> promise;
  };

  struct RecvTransfer {
    std::string id;
    std::vector<int32_t> blocks;
    absl::Time deadline;
    enum State { kLive, kComplete, kFailed } state = kLive;
    int expected_senders = -1;
    std::set<int> done_ok;
    int done_direct = 0;          // senders whose DONE(OK) said they wrote directly
    std::map<int, EpPtr> active;  // src rank -> sender endpoint (accepted, no DONE yet)
    absl::Time free_by = absl::InfiniteFuture();
    bool freed = false, erase_when_freed = false;
    std::shared_ptr<Outcome> outcome = std::make_shared<Outcome>();
  };

  AgentOptions options;
  UcpContext context;
  UcpWorker worker;
  std::string address;
  uint64_t epoch = 0;
  bool cuda = false;
  int wake_fd = -1;
  int worker_fd = -1;

  // Set once by RegisterKvRegion (before transfers), read-only afterwards.
  std::unique_ptr<UcpMemory> memory;
  std::string rkey;
  KvRegion region;
  std::string direct_export;  // region.direct->Export(), or empty
  std::vector<int32_t> free_blocks;

  absl::flat_hash_map<std::string, EpPtr> endpoints;  // healthy, by peer address
  std::map<ucp_ep_h, std::weak_ptr<Endpoint>> by_handle;
  std::vector<std::pair<ucp_ep_h, void*>> closing;  // ucp_ep_close_nbx requests
  int64_t open_endpoints = 0;
  std::map<std::string, std::unique_ptr<SendTransfer>> sends;
  std::map<std::string, std::unique_ptr<RecvTransfer>> recvs;
  std::vector<std::function<void()>> deferred;
  // Final status of recently released failed transfers, so that a sender that
  // comes late learns why (CANCELLED, DEADLINE_EXCEEDED) instead of NOT_FOUND.
  std::map<std::string, absl::Status> tombstones;
  std::deque<std::string> tombstone_order;

  void EraseRecv(const std::string& id) {
    auto it = recvs.find(id);
    if (it == recvs.end()) return;
    const auto& st = it->second->outcome->status;
    if (st && !st->ok()) {
      tombstones[id] = *st;
      tombstone_order.push_back(id);
      if (tombstone_order.size() > 4096) {
        tombstones.erase(tombstone_order.front());
        tombstone_order.pop_front();
      }
    }
    recvs.erase(it);
  }

  std::mutex task_mu;
  std::deque<std::function<void()>> tasks;
  bool stop = false;
  absl::Time stop_deadline = absl::InfiniteFuture();
  std::thread thread;

  ~Impl() {
    if (wake_fd >= 0) close(wake_fd);
  }

  // ---- any thread -------------------------------------------------------
  void Submit(std::function<void()> fn) {
    {
      std::lock_guard<std::mutex> lock(task_mu);
      tasks.push_back(std::move(fn));
    }
    uint64_t one = 1;
    (void)!write(wake_fd, &one, sizeof(one));
  }
  template <typename T>
  T Call(std::function<T()> fn) {
    auto p = std::make_shared<std::promise<T>>();
    std::future<T> f = p->get_future();
    Submit([p, fn = std::move(fn)] { p->set_value(fn()); });
    return f.get();
  }

  // ---- endpoints ---------------------------------------------------------
  static void OnEpError(void* arg, ucp_ep_h ep, ucs_status_t status) {
    auto* self = static_cast<Impl*>(arg);
    self->deferred.push_back([self, ep, status] { self->EndpointFailed(ep, status); });
  }

  absl::StatusOr<EpPtr> GetEndpoint(const std::string& addr) {
    if (auto it = endpoints.find(addr); it != endpoints.end()) return it->second;
    ucp_ep_params_t params{};
    params.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE |
                        UCP_EP_PARAM_FIELD_ERR_HANDLER;
    params.address = reinterpret_cast<const ucp_address_t*>(addr.data());
    params.err_mode =
        options.peer_failure_detection ? UCP_ERR_HANDLING_MODE_PEER : UCP_ERR_HANDLING_MODE_NONE;
    params.err_handler.cb = &Impl::OnEpError;
    params.err_handler.arg = this;
    ucp_ep_h ep = nullptr;
    ucs_status_t st = ucp_ep_create(worker.get(), &params, &ep);
    if (st != UCS_OK) return UcsToStatus(st, "ucp_ep_create");
    ++open_endpoints;
    EpPtr e(new Endpoint{addr, ep, false}, [this](Endpoint* p) {
      CloseEp(p->ep, p->failed);
      delete p;
    });
    endpoints[addr] = e;
    by_handle[ep] = e;
    return e;
  }

  void CloseEp(ucp_ep_h ep, bool force) {
    by_handle.erase(ep);
    ucp_request_param_t param{};
    param.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
    param.flags = force ? UCP_EP_CLOSE_FLAG_FORCE : 0;
    void* req = ucp_ep_close_nbx(ep, &param);
    if (req == nullptr || UCS_PTR_IS_ERR(req)) {
      --open_endpoints;
    } else {
      closing.emplace_back(ep, req);
    }
  }

  void EndpointFailed(ucp_ep_h handle, ucs_status_t status) {
    auto it = by_handle.find(handle);
    if (it == by_handle.end()) return;
    EpPtr ep = it->second.lock();
    if (!ep || ep->failed) return;
    ep->failed = true;
    endpoints.erase(ep->address);
    const absl::Status dead = UcsToStatus(status, "peer failed");
    LOG(WARNING) << "UCX endpoint failed: " << dead;
    for (auto& [id, s] : sends) {
      for (size_t d = 0; d < s->eps.size(); ++d) {
        if (s->eps[d] == ep) {
          Abort(*s, absl::UnavailableError(absl::StrCat("decode rank ", d, " of transfer ", id,
                                                        " unreachable: ", dead.message())));
        }
      }
    }
    for (auto& [id, r] : recvs) {
      for (auto a = r->active.begin(); a != r->active.end();) {
        if (a->second == ep) {
          const int src = a->first;
          a = r->active.erase(a);
          Fail(*r, absl::UnavailableError(absl::StrCat("prefill rank ", src, " of transfer ", id,
                                                       " died: ", dead.message())));
        } else {
          ++a;
        }
      }
      MaybeFree(*r);
    }
  }

  // ---- notices -----------------------------------------------------------
  void Send(const EpPtr& ep, const Notice& n, std::function<void(ucs_status_t)> done) {
    if (ep->failed) {
      if (done) done(UCS_ERR_CONNECTION_RESET);
      return;
    }
    struct Ctx {
      std::string bytes;
      std::function<void(ucs_status_t)> done;
      Impl* self;
    };
    auto* ctx = new Ctx{n.SerializeAsString(), std::move(done), this};
    ucp_request_param_t param{};
    param.op_attr_mask =
        UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA | UCP_OP_ATTR_FIELD_FLAGS;
    param.flags = UCP_AM_SEND_FLAG_EAGER;
    param.user_data = ctx;
    param.cb.send = [](void* req, ucs_status_t st, void* user) {
      auto* c = static_cast<Ctx*>(user);
      c->self->deferred.push_back([c, st] {
        if (c->done) c->done(st);
        delete c;
      });
      ucp_request_free(req);
    };
    void* req =
        ucp_am_send_nbx(ep->ep, kAmId, nullptr, 0, ctx->bytes.data(), ctx->bytes.size(), &param);
    if (req == nullptr || UCS_PTR_IS_ERR(req)) {
      const ucs_status_t st = req == nullptr ? UCS_OK : UCS_PTR_STATUS(req);
      deferred.push_back([ctx, st] {
        if (ctx->done) ctx->done(st);
        delete ctx;
      });
    }
  }

  static ucs_status_t OnAm(void* arg, const void*, size_t, void* data, size_t length,
                           const ucp_am_recv_param_t* param) {
    auto* self = static_cast<Impl*>(arg);
    if (param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) {
      LOG(ERROR) << "unexpected rendezvous notice dropped";
      return UCS_OK;
    }
    Notice n;
    if (!n.ParseFromArray(data, static_cast<int>(length))) {
      LOG(ERROR) << "malformed transfer notice dropped";
      return UCS_OK;
    }
    self->deferred.push_back([self, n = std::move(n)] { self->HandleNotice(n); });
    return UCS_OK;
  }

  void HandleNotice(const Notice& n) {
    switch (n.kind()) {
      case Notice::BEGIN:
        return OnBegin(n);
      case Notice::ACCEPT:
      case Notice::REJECT:
      case Notice::CANCEL:
        if (auto it = sends.find(n.transfer_id()); it != sends.end()) {
          SendTransfer& s = *it->second;
          if (n.kind() == Notice::ACCEPT) {
            if (--s.accepts_pending == 0 && !s.aborting) PostPuts(s);
          } else {
            Abort(s, NoticeStatus(n));
          }
          Advance(s);
        }
        return;
      case Notice::DONE:
        return OnDone(n);
      default:
        LOG(ERROR) << "unknown notice kind " << n.kind();
    }
  }

  // ---- receiver ----------------------------------------------------------
  void Reply(const std::string& addr, Notice n, Notice::Kind kind, const absl::Status& st) {
    absl::StatusOr<EpPtr> ep = GetEndpoint(addr);
    if (!ep.ok()) return;
    n.set_kind(kind);
    n.set_code(static_cast<int>(st.code()));
    n.set_message(std::string(st.message()));
    n.clear_sender_address();
    Send(*ep, n, nullptr);
  }

  void OnBegin(const Notice& n) {
    auto it = recvs.find(n.transfer_id());
    absl::Status refuse;
    if (n.agent_epoch() != epoch) {
      refuse = absl::FailedPreconditionError("stale target: decode agent restarted");
    } else if (it == recvs.end() && tombstones.count(n.transfer_id())) {
      refuse = tombstones[n.transfer_id()];
    } else if (it == recvs.end()) {
      refuse = absl::NotFoundError(absl::StrCat("no reservation for ", n.transfer_id()));
    } else if (it->second->state != RecvTransfer::kLive) {
      refuse = it->second->outcome->status.value_or(absl::AbortedError("transfer over"));
      if (refuse.ok()) refuse = absl::AlreadyExistsError("transfer already complete");
    } else if (it->second->expected_senders != -1 &&
               it->second->expected_senders != n.src_world_size()) {
      refuse = absl::InvalidArgumentError("senders disagree on prefill world size");
    }
    if (!refuse.ok()) return Reply(n.sender_address(), n, Notice::REJECT, refuse);
    absl::StatusOr<EpPtr> ep = GetEndpoint(n.sender_address());
    if (!ep.ok()) return;
    RecvTransfer& r = *it->second;
    r.expected_senders = n.src_world_size();
    r.active[n.src_rank()] = *ep;
    Reply(n.sender_address(), n, Notice::ACCEPT, absl::OkStatus());
  }

  void OnDone(const Notice& n) {
    auto it = recvs.find(n.transfer_id());
    if (it == recvs.end()) return;
    RecvTransfer& r = *it->second;
    r.active.erase(n.src_rank());
    if (n.code() == 0) {
      if (r.done_ok.insert(n.src_rank()).second && n.direct()) ++r.done_direct;
      if (r.state == RecvTransfer::kLive &&
          static_cast<int>(r.done_ok.size()) == r.expected_senders) {
        if (r.done_direct != 0 && r.done_direct != r.expected_senders) {
          // Some senders wrote the device memory, others the staging region: no
          // staging copy can merge them.
          Fail(r, absl::FailedPreconditionError(absl::StrCat(
                      "transfer ", r.id, ": ", r.done_direct, " of ", r.expected_senders,
                      " prefill ranks wrote directly, the others through UCX")));
          MaybeFree(r);
          return;
        }
        r.state = RecvTransfer::kComplete;
        r.outcome->Set(absl::OkStatus());
      }
    } else {
      Fail(r, NoticeStatus(n));
    }
    MaybeFree(r);
  }

  void Fail(RecvTransfer& r, absl::Status st) {
    if (r.state != RecvTransfer::kLive) return;
    r.state = RecvTransfer::kFailed;
    r.outcome->Set(st);
    r.free_by = absl::Now() + options.cancel_grace;
    for (auto& [src, ep] : r.active) {
      Notice n;
      n.set_kind(Notice::CANCEL);
      n.set_transfer_id(r.id);
      n.set_src_rank(src);
      n.set_code(static_cast<int>(st.code()));
      n.set_message(std::string(st.message()));
      Send(ep, n, nullptr);
    }
    MaybeFree(r);
  }

  void MaybeFree(RecvTransfer& r) {
    if (r.state != RecvTransfer::kFailed || r.freed || !r.active.empty()) return;
    FreeBlocks(r);
  }

  void FreeBlocks(RecvTransfer& r) {
    free_blocks.insert(free_blocks.end(), r.blocks.begin(), r.blocks.end());
    r.blocks.clear();
    r.active.clear();
    r.freed = true;
    if (r.erase_when_freed) EraseRecv(r.id);
  }

  // ---- sender ------------------------------------------------------------
  void StartPush(std::unique_ptr<SendTransfer> owned) {
    SendTransfer& s = *owned;
    if (sends.count(s.id)) {
      s.promise.set_value(absl::AlreadyExistsError("push " + s.id + " already in flight"));
      return;
    }
    sends[s.id] = std::move(owned);
    const auto& dests = s.req.target.destinations();
    for (int d = 0; d < dests.size(); ++d) {
      absl::StatusOr<EpPtr> ep = GetEndpoint(dests[d].worker_address());
      if (!ep.ok()) {
        Abort(s, ep.status());
        break;
      }
      s.eps.push_back(*ep);
      ucp_rkey_h key = nullptr;
      ucs_status_t st = ucp_ep_rkey_unpack((*ep)->ep, dests[d].rkey().data(), &key);
      if (st != UCS_OK) {
        Abort(s, absl::InvalidArgumentError(
                     absl::StrCat("destination ", d, " rkey: ", ucs_status_string(st))));
        break;
      }
      s.rkeys.emplace_back(key);
      if (s.req.direct) {
        absl::StatusOr<char*> dst = region.direct != nullptr
                                        ? region.direct->Open(dests[d].direct())
                                        : absl::FailedPreconditionError("no direct copier");
        if (!dst.ok()) {
          Abort(s, dst.status());
          break;
        }
        s.direct_dsts.push_back(*dst);
      }
    }
    if (!s.aborting) {
      s.accepts_pending = dests.size();
      for (int d = 0; d < dests.size(); ++d) {
        Notice n;
        n.set_kind(Notice::BEGIN);
        n.set_transfer_id(s.id);
        n.set_src_rank(region.rank);
        n.set_src_world_size(region.layout.cp.world_size);
        n.set_dst_rank(d);
        n.set_agent_epoch(dests[d].agent_epoch());
        n.set_sender_address(address);
        Send(s.eps[d], n, nullptr);
      }
    }
    Advance(s);
  }

  void PostPuts(SendTransfer& s) {
    if (options.before_puts_for_test) options.before_puts_for_test(s.id);
    if (s.req.direct) return CopyDirect(s);
    const auto& dests = s.req.target.destinations();
    for (const TransferRun& run : s.runs) {
      if (s.eps[run.dst_rank]->failed) continue;
      ucp_request_param_t param{};
      param.op_attr_mask = UCP_OP_ATTR_FIELD_MEMH;
      param.memh = memory->get();
      void* req = ucp_put_nbx(
          s.eps[run.dst_rank]->ep, static_cast<char*>(region.base) + run.src_offset, run.bytes,
          dests[run.dst_rank].remote_base() + run.dst_offset, s.rkeys[run.dst_rank].get(), &param);
      if (UCS_PTR_IS_ERR(req)) {
        Abort(s, UcsToStatus(UCS_PTR_STATUS(req), "ucp_put_nbx"));
        break;
      }
      if (req != nullptr) ucp_request_free(req);  // completion is tracked by the flush
    }
    s.puts_posted = true;
    s.flushes_pending = static_cast<int>(s.eps.size());
    for (size_t d = 0; d < s.eps.size(); ++d) {
      if (s.eps[d]->failed) {
        --s.flushes_pending;
        continue;
      }
      ucp_request_param_t param{};
      param.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
      auto* ctx = new std::pair<Impl*, std::string>(this, s.id);
      param.user_data = ctx;
      param.cb.send = [](void* req, ucs_status_t st, void* user) {
        auto* c = static_cast<std::pair<Impl*, std::string>*>(user);
        c->first->deferred.push_back([c, st] {
          c->first->FlushDone(c->second, st);
          delete c;
        });
        ucp_request_free(req);
      };
      void* req = ucp_ep_flush_nbx(s.eps[d]->ep, &param);
      if (req == nullptr || UCS_PTR_IS_ERR(req)) {
        const ucs_status_t st = req == nullptr ? UCS_OK : UCS_PTR_STATUS(req);
        deferred.push_back([this, ctx, st] {
          FlushDone(ctx->second, st);
          delete ctx;
        });
      }
    }
  }

  // The direct path: every run copied by the DirectCopier, waited for here (on the
  // progress thread: a few milliseconds per GiB over NVLink), then DONE as after a
  // flush.
  void CopyDirect(SendTransfer& s) {
    DirectCopier& c = *region.direct;
    for (const TransferRun& run : s.runs) {
      if (s.eps[run.dst_rank]->failed) continue;
      const absl::Status st = c.Copy(s.direct_dsts[run.dst_rank] + run.dst_offset,
                                     c.local_base() + run.src_offset, run.bytes);
      if (!st.ok()) {
        Abort(s, st);
        break;
      }
    }
    if (const absl::Status st = c.Wait(); !st.ok()) Abort(s, st);
    s.puts_posted = true;
    s.flushes_pending = 0;
  }

  void FlushDone(const std::string& id, ucs_status_t st) {
    auto it = sends.find(id);
    if (it == sends.end()) return;
    SendTransfer& s = *it->second;
    --s.flushes_pending;
    if (st != UCS_OK) Abort(s, UcsToStatus(st, "flush to decode rank"));
    Advance(s);
  }

  void Abort(SendTransfer& s, absl::Status st) {
    if (s.status.ok()) s.status = std::move(st);
    s.aborting = true;
  }

  // Moves a push forward: after the flushes (or at once when aborted before any
  // put), tell every reachable decode rank DONE(status); then resolve the future.
  void Advance(SendTransfer& s) {
    const bool quiet = s.puts_posted ? s.flushes_pending == 0 : s.aborting;
    if (!s.dones_started && quiet) {
      s.dones_started = true;
      for (size_t d = 0; d < s.eps.size(); ++d) {
        if (s.eps[d]->failed) continue;
        Notice n;
        n.set_kind(Notice::DONE);
        n.set_transfer_id(s.id);
        n.set_src_rank(region.rank);
        n.set_dst_rank(static_cast<int>(d));
        n.set_code(static_cast<int>(s.status.code()));
        n.set_message(std::string(s.status.message()));
        n.set_direct(s.req.direct && s.puts_posted);
        ++s.dones_pending;
        Send(s.eps[d], n, [this, id = s.id](ucs_status_t st) {
          auto it = sends.find(id);
          if (it == sends.end()) return;
          --it->second->dones_pending;
          if (st != UCS_OK) Abort(*it->second, UcsToStatus(st, "DONE notice"));
          Advance(*it->second);
        });
      }
    }
    if (s.dones_started && s.dones_pending == 0) {
      s.promise.set_value(s.status);
      sends.erase(s.id);  // destroys rkeys, drops endpoint refs
    }
  }

  // ---- progress thread ---------------------------------------------------
  void Tick(absl::Time now) {
    for (auto& [id, s] : sends) {
      if (!s->aborting && now > s->req.deadline) {
        Abort(*s, absl::DeadlineExceededError("push " + id + " missed its deadline"));
      }
    }
    std::vector<std::string> ids;
    for (auto& [id, s] : sends) ids.push_back(id);
    for (const std::string& id : ids) {
      if (auto it = sends.find(id); it != sends.end()) Advance(*it->second);
    }
    for (auto it = recvs.begin(); it != recvs.end();) {
      RecvTransfer& r = *(it++)->second;
      if (r.state == RecvTransfer::kLive && now > r.deadline) {
        Fail(r, absl::DeadlineExceededError("transfer " + r.id + " not complete by deadline"));
      } else if (r.state == RecvTransfer::kFailed && !r.freed && now > r.free_by) {
        LOG(WARNING) << "transfer " << r.id << ": senders silent after cancel; freeing blocks";
        FreeBlocks(r);
      }
    }
  }

  bool RunDeferred() {
    bool any = false;
    while (!deferred.empty()) {
      std::vector<std::function<void()>> batch;
      batch.swap(deferred);
      for (auto& fn : batch) fn();
      any = true;
    }
    return any;
  }

  void Loop() {
    absl::Time last_activity = absl::Now(), last_tick = absl::InfinitePast();
    while (true) {
      std::deque<std::function<void()>> batch;
      bool stopping;
      {
        std::lock_guard<std::mutex> lock(task_mu);
        batch.swap(tasks);
        stopping = stop;
      }
      for (auto& fn : batch) fn();
      bool active = !batch.empty();
      while (ucp_worker_progress(worker.get()) != 0) active = true;
      active |= RunDeferred();
      for (auto it = closing.begin(); it != closing.end();) {
        if (ucp_request_check_status(it->second) != UCS_INPROGRESS) {
          ucp_request_free(it->second);
          --open_endpoints;
          it = closing.erase(it);
        } else {
          ++it;
        }
      }
      const absl::Time now = absl::Now();
      if (now - last_tick > absl::Milliseconds(1)) {
        Tick(now);
        RunDeferred();
        last_tick = now;
      }
      if (stopping) {
        if (stop_deadline == absl::InfiniteFuture()) stop_deadline = now + absl::Seconds(5);
        if (now > stop_deadline) ForceStop();
        if (sends.empty() && closing.empty() && endpoints.empty()) break;
      }
      bool busy = !closing.empty();
      for (auto& [id, s] : sends) busy |= s->puts_posted;
      if (active || busy) {
        last_activity = now;
        continue;
      }
      if (now - last_activity < options.spin_before_sleep) continue;
      if (ucp_worker_arm(worker.get()) == UCS_ERR_BUSY) continue;
      pollfd fds[2] = {{worker_fd, POLLIN, 0}, {wake_fd, POLLIN, 0}};
      poll(fds, 2, 2);
      if (fds[1].revents & POLLIN) {
        uint64_t v;
        (void)!read(wake_fd, &v, sizeof(v));
      }
    }
  }

  // Shutdown took too long (a silent peer): resolve every push and drop endpoints.
  void ForceStop() {
    for (auto& [id, s] : sends) {
      s->promise.set_value(s->status.ok() ? absl::CancelledError("agent stopped") : s->status);
    }
    sends.clear();
    endpoints.clear();
    for (auto& [h, req] : closing) ucp_request_free(req);
    open_endpoints -= static_cast<int64_t>(closing.size());
    closing.clear();
  }

  void Shutdown() {
    Submit([this] {
      for (auto& [id, r] : recvs) Fail(*r, absl::CancelledError("transfer agent shutting down"));
      for (auto& [id, s] : sends) Abort(*s, absl::CancelledError("transfer agent shutting down"));
      options.cancel_grace = absl::ZeroDuration();
      endpoints.clear();  // closes the idle ones; live transfers hold theirs
      std::lock_guard<std::mutex> lock(task_mu);
      stop = true;
    });
    thread.join();
    recvs.clear();
  }
};

TransferAgent::TransferAgent(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

TransferAgent::~TransferAgent() { impl_->Shutdown(); }

absl::StatusOr<std::unique_ptr<TransferAgent>> TransferAgent::Create(const AgentOptions& options) {
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  absl::StatusOr<UcpContext> context = CreateUcpContext(options.name);
  if (!context.ok()) return context.status();
  impl->context = std::move(*context);
  absl::StatusOr<UcpWorker> worker = CreateUcpWorker(impl->context.get());
  if (!worker.ok()) return worker.status();
  impl->worker = std::move(*worker);
  absl::StatusOr<std::string> address = WorkerAddress(impl->worker.get());
  if (!address.ok()) return address.status();
  impl->address = std::move(*address);
  if (ucs_status_t st = ucp_worker_get_efd(impl->worker.get(), &impl->worker_fd); st != UCS_OK) {
    return UcsToStatus(st, "ucp_worker_get_efd");
  }
  impl->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (impl->wake_fd < 0) return absl::InternalError("eventfd failed");
  impl->cuda = ContextSupportsCuda(impl->context.get());
  impl->epoch = std::random_device()() | (uint64_t{std::random_device()()} << 32) | 1;
  ucp_am_handler_param_t am{};
  am.field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID | UCP_AM_HANDLER_PARAM_FIELD_CB |
                  UCP_AM_HANDLER_PARAM_FIELD_ARG | UCP_AM_HANDLER_PARAM_FIELD_FLAGS;
  am.id = kAmId;
  am.cb = &Impl::OnAm;
  am.arg = impl.get();
  am.flags = UCP_AM_FLAG_WHOLE_MSG;
  if (ucs_status_t st = ucp_worker_set_am_recv_handler(impl->worker.get(), &am); st != UCS_OK) {
    return UcsToStatus(st, "ucp_worker_set_am_recv_handler");
  }
  Impl* raw = impl.get();
  impl->thread = std::thread([raw] { raw->Loop(); });
  return std::unique_ptr<TransferAgent>(new TransferAgent(std::move(impl)));
}

absl::Status TransferAgent::RegisterKvRegion(const KvRegion& region) {
  if (absl::Status st = region.layout.Validate(); !st.ok()) return st;
  if (region.memory == MemoryKind::kCuda && !impl_->cuda) {
    return absl::UnimplementedError(
        "this UCX build cannot register CUDA memory; the pinned staging path is not built yet");
  }
  if (region.base == nullptr || region.num_blocks < 0 ||
      region.block_stride_bytes < region.layout.geometry.BlockBytes() ||
      (region.num_blocks > 0 && region.bytes < (region.num_blocks - 1) * region.block_stride_bytes +
                                                   region.layout.geometry.BlockBytes())) {
    return absl::InvalidArgumentError("KV region too small for its blocks");
  }
  return impl_->Call<absl::Status>([this, region]() -> absl::Status {
    if (impl_->memory) return absl::FailedPreconditionError("KV region already registered");
    absl::StatusOr<std::unique_ptr<UcpMemory>> mem =
        MapMemory(impl_->context.get(), region.base, region.bytes);
    if (!mem.ok()) return mem.status();
    absl::StatusOr<std::string> rkey = (*mem)->PackRkey();
    if (!rkey.ok()) return rkey.status();
    impl_->memory = std::move(*mem);
    impl_->rkey = std::move(*rkey);
    impl_->region = region;
    if (region.direct != nullptr) impl_->direct_export = region.direct->Export();
    for (int64_t b = region.num_blocks - 1; b >= 0; --b) {
      impl_->free_blocks.push_back(static_cast<int32_t>(b));
    }
    return absl::OkStatus();
  });
}

const std::string& TransferAgent::worker_address() const { return impl_->address; }
uint64_t TransferAgent::epoch() const { return impl_->epoch; }
bool TransferAgent::cuda_memory_supported() const { return impl_->cuda; }

absl::StatusOr<v1::KvDestination> TransferAgent::Reserve(const std::string& transfer_id,
                                                         int64_t num_blocks, absl::Time deadline) {
  return ReserveImpl(transfer_id, num_blocks, {}, deadline);
}

absl::StatusOr<v1::KvDestination> TransferAgent::ReserveBlocks(const std::string& transfer_id,
                                                               std::vector<int32_t> block_ids,
                                                               absl::Time deadline) {
  return ReserveImpl(transfer_id, -1, std::move(block_ids), deadline);
}

absl::StatusOr<v1::KvDestination> TransferAgent::ReserveImpl(const std::string& transfer_id,
                                                             int64_t num_blocks,
                                                             std::vector<int32_t> block_ids,
                                                             absl::Time deadline) {
  using R = absl::StatusOr<v1::KvDestination>;
  return impl_->Call<R>([&]() -> R {
    Impl& m = *impl_;
    if (!m.memory) return absl::FailedPreconditionError("no KV region registered");
    if (transfer_id.empty() || m.recvs.count(transfer_id)) {
      return absl::AlreadyExistsError("transfer id empty or in use: " + transfer_id);
    }
    auto r = std::make_unique<Impl::RecvTransfer>();
    r->id = transfer_id;
    r->deadline = deadline;
    if (num_blocks >= 0) {  // the agent picks
      if (num_blocks > static_cast<int64_t>(m.free_blocks.size())) {
        return absl::ResourceExhaustedError(
            absl::StrCat("want ", num_blocks, " KV blocks, ", m.free_blocks.size(), " free"));
      }
      r->blocks.assign(m.free_blocks.end() - num_blocks, m.free_blocks.end());
      m.free_blocks.resize(m.free_blocks.size() - num_blocks);
    } else {  // the caller's block manager picked: they must all be free here
      std::vector<int32_t> remaining = m.free_blocks;
      for (int32_t b : block_ids) {
        auto it = std::find(remaining.begin(), remaining.end(), b);
        if (b < 0 || b >= m.region.num_blocks) {
          return absl::InvalidArgumentError(
              absl::StrCat("block ", b, " outside the region of ", m.region.num_blocks, " blocks"));
        }
        if (it == remaining.end()) {
          return absl::FailedPreconditionError(
              absl::StrCat("block ", b, " is already reserved (or listed twice)"));
        }
        remaining.erase(it);
      }
      m.free_blocks = std::move(remaining);
      r->blocks = std::move(block_ids);
    }
    v1::KvDestination d;
    d.set_rank(m.region.rank);
    d.set_worker_address(m.address);
    d.set_remote_base(reinterpret_cast<uint64_t>(m.region.base));
    d.set_region_bytes(m.region.bytes);
    d.set_rkey(m.rkey);
    for (int32_t b : r->blocks) d.add_block_ids(b);
    d.set_block_stride_bytes(m.region.block_stride_bytes);
    d.set_memory(m.region.memory == MemoryKind::kCuda ? "cuda" : "host");
    d.set_agent_epoch(m.epoch);
    d.set_direct(m.direct_export);
    m.recvs[transfer_id] = std::move(r);
    return d;
  });
}

absl::Status TransferAgent::WaitReceived(const std::string& transfer_id, absl::Time wait_until) {
  std::shared_ptr<Outcome> outcome = impl_->Call<std::shared_ptr<Outcome>>([&] {
    auto it = impl_->recvs.find(transfer_id);
    return it == impl_->recvs.end() ? nullptr : it->second->outcome;
  });
  if (!outcome) return absl::NotFoundError("no transfer " + transfer_id);
  std::unique_lock<std::mutex> lock(outcome->mu);
  const auto until = absl::ToChronoTime(wait_until);
  if (!outcome->cv.wait_until(lock, until, [&] { return outcome->status.has_value(); })) {
    return absl::DeadlineExceededError("still waiting for transfer " + transfer_id);
  }
  return *outcome->status;
}

std::optional<absl::Status> TransferAgent::PollReceived(const std::string& transfer_id) {
  std::shared_ptr<Outcome> outcome = impl_->Call<std::shared_ptr<Outcome>>([&] {
    auto it = impl_->recvs.find(transfer_id);
    return it == impl_->recvs.end() ? nullptr : it->second->outcome;
  });
  if (!outcome) return absl::NotFoundError("no transfer " + transfer_id);
  std::lock_guard<std::mutex> lock(outcome->mu);
  return outcome->status;
}

bool TransferAgent::ReceivedDirect(const std::string& transfer_id) {
  return impl_->Call<bool>([&] {
    auto it = impl_->recvs.find(transfer_id);
    return it != impl_->recvs.end() && it->second->state == Impl::RecvTransfer::kComplete &&
           it->second->done_direct > 0;
  });
}

bool TransferAgent::CanPushDirect(const v1::KvTransferTarget& target) {
  DirectCopier* c = impl_->region.direct.get();  // set before any push, then read-only
  if (c == nullptr || target.destinations().empty()) return false;
  for (const v1::KvDestination& d : target.destinations()) {
    if (d.direct().empty() || !c->Open(d.direct()).ok()) return false;
  }
  return true;
}

absl::Status TransferAgent::CancelReceive(const std::string& transfer_id) {
  return impl_->Call<absl::Status>([&]() -> absl::Status {
    auto it = impl_->recvs.find(transfer_id);
    if (it == impl_->recvs.end()) return absl::NotFoundError("no transfer " + transfer_id);
    impl_->Fail(*it->second, absl::CancelledError("transfer cancelled by the decode side"));
    return absl::OkStatus();
  });
}

absl::Status TransferAgent::Release(const std::string& transfer_id) {
  return impl_->Call<absl::Status>([&]() -> absl::Status {
    auto it = impl_->recvs.find(transfer_id);
    if (it == impl_->recvs.end()) return absl::NotFoundError("no transfer " + transfer_id);
    Impl::RecvTransfer& r = *it->second;
    if (r.state == Impl::RecvTransfer::kLive) {
      return absl::FailedPreconditionError("transfer still live; cancel it first");
    }
    r.erase_when_freed = true;
    if (r.state == Impl::RecvTransfer::kComplete && !r.freed) {
      impl_->FreeBlocks(r);  // erases r
    } else if (r.freed) {
      impl_->EraseRecv(transfer_id);
    }
    return absl::OkStatus();
  });
}

std::future<absl::Status> TransferAgent::PushAsync(PushRequest request) {
  auto s = std::make_unique<Impl::SendTransfer>();
  std::future<absl::Status> future = s->promise.get_future();
  if (!impl_->memory) {
    s->promise.set_value(absl::FailedPreconditionError("no KV region registered"));
    return future;
  }
  PushSource src{impl_->region.layout,
                 impl_->region.rank,
                 request.prompt_len,
                 request.block_ids,
                 impl_->region.block_stride_bytes,
                 impl_->region.bytes};
  absl::StatusOr<TransferPlanInput> in = BuildPlanInput(request.target, src, impl_->cuda);
  absl::StatusOr<std::vector<TransferRun>> runs =
      in.ok() ? PlanTransfer(*in, src.rank) : in.status();
  if (!runs.ok()) {
    s->promise.set_value(runs.status());
    return future;
  }
  s->id = request.target.transfer_id();
  s->runs = std::move(*runs);
  s->req = std::move(request);
  impl_->Submit([this, s = std::shared_ptr<Impl::SendTransfer>(s.release())]() mutable {
    impl_->StartPush(std::unique_ptr<Impl::SendTransfer>(new Impl::SendTransfer(std::move(*s))));
  });
  return future;
}

void TransferAgent::CancelPush(const std::string& transfer_id) {
  impl_->Submit([this, transfer_id] {
    if (auto it = impl_->sends.find(transfer_id); it != impl_->sends.end()) {
      impl_->Abort(*it->second, absl::CancelledError("push cancelled by the prefill side"));
      impl_->Advance(*it->second);
    }
  });
}

AgentCounters TransferAgent::counters() const {
  return impl_->Call<AgentCounters>([this] {
    const Impl& m = *impl_;
    AgentCounters c;
    c.registrations = m.memory ? 1 : 0;
    c.endpoints = m.open_endpoints;
    c.pushes_in_flight = static_cast<int64_t>(m.sends.size());
    for (const auto& [id, r] : m.recvs) c.receives_live += r->freed ? 0 : 1;
    c.free_blocks = static_cast<int64_t>(m.free_blocks.size());
    c.reserved_blocks = m.region.num_blocks - c.free_blocks;
    return c;
  });
}

}  // namespace cpserve::transfer
