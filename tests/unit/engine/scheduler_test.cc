#include "worker/engine/scheduler.h"
