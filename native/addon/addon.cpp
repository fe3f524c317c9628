// Addon entry: a flat export list. The core is plain C++; this layer only converts and schedules.
#include <napi.h>

#include "covenant/gemm.h"
#include "covenant/thread_pool.h"
#include "engine_wrap.h"

namespace {

Napi::Value BuildInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("blas", covenant::gemm_have_blas());
  o.Set("blasInfo", covenant::gemm_blas_info());
  o.Set("gemmDefault", covenant::gemm_backend_name(covenant::gemm_default_backend()));
  o.Set("packedIsa", covenant::gemm_packed_isa());
  o.Set("hardwareThreads", covenant::ThreadPool::hardware_threads());
  o.Set("cuda", false);
  return o;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("NativeEngine", covenant_addon::EngineWrap::Define(env));
  exports.Set("buildInfo", Napi::Function::New(env, BuildInfo));
  return exports;
}

}  // namespace

NODE_API_MODULE(covenant, Init)
