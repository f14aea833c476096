#include "services/common/grpc_server.h"

#include <glog/logging.h>
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <mutex>
#include <thread>

#include "absl/strings/str_cat.h"

namespace cpserve::service {
namespace {

// Self-pipe: the signal handler writes one byte, WaitForShutdownSignal reads it.
int g_pipe[2] = {-1, -1};
std::atomic<int> g_signals{0};
std::once_flag g_pipe_once;

void EnsurePipe() {
  std::call_once(g_pipe_once, [] { PCHECK(pipe(g_pipe) == 0) << "pipe"; });
}

void OnShutdownSignal(int) {
  if (g_signals.fetch_add(1) >= 1) _exit(130);  // second Ctrl-C: give up draining
  const char byte = 1;
  const ssize_t ignored = write(g_pipe[1], &byte, 1);
  (void)ignored;
}

}  // namespace

void InitLogging(const char* program, int verbosity) {
  static std::once_flag once;
  std::call_once(once, [&] {
    FLAGS_logtostderr = true;
    FLAGS_v = verbosity;
    google::InitGoogleLogging(program);
  });
  FLAGS_v = verbosity;
}

void InstallShutdownSignalHandlers() {
  EnsurePipe();
  struct sigaction sa = {};
  sa.sa_handler = OnShutdownSignal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  signal(SIGPIPE, SIG_IGN);
  // SIGTERM/SIGINT are taken by one thread that waits for them; every thread started
  // after this (gRPC's, the engine's) inherits the blocked mask. A handler can then never
  // run on a thread parked in a raw futex wait, where ThreadSanitizer (which defers
  // signals to the next intercepted call) would hold it forever. Threads that already
  // exist keep the handler above.
  static std::once_flag once;
  std::call_once(once, [] {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
    std::thread([set] {
      for (;;) {
        int sig = 0;
        if (sigwait(&set, &sig) == 0) OnShutdownSignal(sig);
      }
    }).detach();
  });
}

void WaitForShutdownSignal() {
  EnsurePipe();
  char byte;
  while (true) {
    const ssize_t n = read(g_pipe[0], &byte, 1);
    if (n == 1) break;
    if (n < 0 && errno == EINTR) continue;
    PLOG(FATAL) << "read shutdown pipe";
  }
  // Leave the byte for other waiters.
  const ssize_t ignored = write(g_pipe[1], &byte, 1);
  (void)ignored;
}

void RequestShutdown() {
  EnsurePipe();
  if (g_signals.fetch_add(1) >= 1) return;
  const char byte = 1;
  const ssize_t ignored = write(g_pipe[1], &byte, 1);
  (void)ignored;
}

bool ShutdownRequested() { return g_signals.load() > 0; }

GrpcServer::GrpcServer(ServerOptions options)
    : options_(std::move(options)), metrics_(std::make_unique<Metrics>()) {}

GrpcServer::~GrpcServer() {
  if (server_ != nullptr && !shut_down_) Shutdown(absl::ZeroDuration());
}

void GrpcServer::AddService(grpc::Service* service, std::string full_name) {
  CHECK(server_ == nullptr) << "AddService after Start";
  services_.push_back(service);
  service_names_.push_back(std::move(full_name));
}

void GrpcServer::OnDrain(std::function<void()> callback) {
  on_drain_.push_back(std::move(callback));
}

std::string GrpcServer::address() const { return absl::StrCat(options_.host, ":", port_); }

absl::Status GrpcServer::Start() {
  CHECK(server_ == nullptr) << "Start twice";
  if (absl::Status s = metrics_->Serve(options_.host, options_.metrics_port); !s.ok()) return s;

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  // Without SO_REUSEPORT a port already in use is an error instead of a shared port.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.AddListeningPort(
      absl::StrCat(options_.host, ":", options_.port),
      options_.credentials ? options_.credentials : grpc::InsecureServerCredentials(), &port_);
  if (options_.max_message_bytes > 0) {
    builder.SetMaxReceiveMessageSize(options_.max_message_bytes);
    builder.SetMaxSendMessageSize(options_.max_message_bytes);
  }
  for (grpc::Service* s : services_) builder.RegisterService(s);
  server_ = builder.BuildAndStart();
  if (server_ == nullptr || port_ == 0) {
    server_.reset();
    return absl::UnavailableError(
        absl::StrCat(options_.name, ": cannot listen on ", options_.host, ":", options_.port));
  }
  grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService();
  CHECK(health != nullptr);
  health->SetServingStatus(true);  // "" = the whole server
  for (const std::string& name : service_names_) health->SetServingStatus(name, true);
  LOG(INFO) << options_.name << ": serving on " << address()
            << (options_.credentials ? " (TLS)" : " (plaintext)")
            << (metrics_->port() >= 0 ? absl::StrCat(", metrics on port ", metrics_->port())
                                      : std::string());
  return absl::OkStatus();
}

void GrpcServer::BeginDrain() {
  if (draining_.exchange(true)) return;
  LOG(INFO) << options_.name << ": draining (no new work admitted)";
  for (auto& cb : on_drain_) cb();
  if (server_ != nullptr) {
    grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService();
    health->SetServingStatus(false);
    for (const std::string& name : service_names_) health->SetServingStatus(name, false);
  }
}

void GrpcServer::Shutdown(absl::Duration grace) {
  BeginDrain();
  if (server_ == nullptr || shut_down_) return;
  shut_down_ = true;
  // In-flight calls get until the deadline; then gRPC cancels them (their reactors see
  // OnCancel and release their downstream work).
  server_->Shutdown(absl::ToChronoTime(absl::Now() + grace));
  server_->Wait();
  LOG(INFO) << options_.name << ": stopped";
}

void GrpcServer::RunUntilShutdownSignal() {
  WaitForShutdownSignal();
  Shutdown(options_.drain_grace);
}

}  // namespace cpserve::service
