#include "services/pool/signal_watcher.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

#include "glog/logging.h"

namespace cpserve::services {
namespace {

int g_pipe[2] = {-1, -1};

extern "C" void OnSignal(int sig) {
  const int saved = errno;
  const unsigned char b = static_cast<unsigned char>(sig);
  (void)!write(g_pipe[1], &b, 1);
  errno = saved;
}

}  // namespace

SignalWatcher::SignalWatcher() {
  CHECK_EQ(g_pipe[0], -1) << "one SignalWatcher at a time";
  CHECK_EQ(pipe2(g_pipe, O_CLOEXEC), 0);
  struct sigaction sa {};
  sa.sa_handler = OnSignal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sigaction(SIGINT, &sa, &old_int_);
  sigaction(SIGTERM, &sa, &old_term_);
  thread_ = std::thread([this] { Loop(); });
}

SignalWatcher::~SignalWatcher() {
  sigaction(SIGINT, &old_int_, nullptr);
  sigaction(SIGTERM, &old_term_, nullptr);
  const unsigned char stop = 0;  // 0 is no signal: tells the thread to end
  (void)!write(g_pipe[1], &stop, 1);
  thread_.join();
  close(g_pipe[0]);
  close(g_pipe[1]);
  g_pipe[0] = g_pipe[1] = -1;
}

void SignalWatcher::Loop() {
  for (;;) {
    unsigned char b = 0;
    const ssize_t n = read(g_pipe[0], &b, 1);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0 || b == 0) return;
    int expected = 0;
    signal_.compare_exchange_strong(expected, b);
    absl::MutexLock l(&mu_);
    seen_ = true;
  }
}

bool SignalWatcher::WaitFor(absl::Duration timeout) {
  absl::MutexLock l(&mu_);
  mu_.AwaitWithTimeout(absl::Condition(&seen_), timeout);
  return seen_;
}

}  // namespace cpserve::services
