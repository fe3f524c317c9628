// allReduce binding: reads the options on the main thread, runs the collective on its own native thread,
// settles the promise through a thread-safe function, and lets JS abort it.
#pragma once
#include <napi.h>

namespace covenant_addon {

// allReduceStart(tensor, options) -> { promise, abort() }
Napi::Value AllReduceStart(const Napi::CallbackInfo& info);
// Aborts the environment's collectives still running and waits for their threads (the addon's cleanup
// hook calls it at environment teardown).
void AbortAllCollectives(napi_env env);

}  // namespace covenant_addon
