#include "tests/common/staggered_streams.h"

#include <string>

#include "absl/synchronization/mutex.h"
#include "gtest/gtest.h"

namespace cpserve::testing {

std::vector<Stream> RunStaggered(Engine& e, const std::vector<std::vector<int32_t>>& prompts,
                                 int max_tokens, size_t gap) {
  std::vector<Stream> out(prompts.size());
  absl::Mutex mu;
  struct Wait {
    Stream* s;
    size_t n;
  };
  for (size_t i = 0; i < prompts.size(); ++i) {
    GenerationParams p;
    p.max_tokens = max_tokens;
    p.ignore_eos = true;
    p.return_logits = true;
    Stream* r = &out[i];
    const absl::Status submitted =
        e.Submit("r" + std::to_string(i), prompts[i], p, [r, &mu](const TokenEvent& ev) {
          absl::MutexLock lock(&mu);
          if (ev.token >= 0) {
            r->tokens.push_back(ev.token);
            r->logits.push_back(ev.logits);
          }
          if (ev.finished) {
            r->status = ev.status;
            r->done = true;
          }
        });
    EXPECT_TRUE(submitted.ok()) << submitted;
    Wait w{r, gap};
    absl::MutexLock lock(&mu);
    if (!submitted.ok()) {
      r->status = submitted;
      r->done = true;
    }
    mu.Await(absl::Condition(
        +[](Wait* x) { return x->s->done || x->s->tokens.size() >= x->n; }, &w));
  }
  absl::MutexLock lock(&mu);
  for (Stream& s : out) {
    mu.Await(absl::Condition(
        +[](Stream* x) { return x->done; }, &s));
  }
  return out;
}

}  // namespace cpserve::testing
