#include "worker/engine/decode_step_accelerator.h"

#include "cpserve/v1/step.pb.h"

namespace cpserve {

bool IsAcceleratedDecodeStep(const v1::StepCommand& command, int world_size, int64_t max_batch,
                             int64_t max_context) {
  if (world_size != 1 || command.work_size() < 1 || command.work_size() > max_batch) return false;
  for (const v1::StepWork& w : command.work()) {
    if (w.end() != w.start() + 1 || !w.samples() || w.partitioned() || w.start() < 0 ||
        w.end() > max_context) {
      return false;
    }
  }
  return true;
}

}  // namespace cpserve
