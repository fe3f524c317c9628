// Addon entry: a flat export list. The core is plain C++; this layer only converts and schedules.
#include <napi.h>

#include "covenant/crc32c.h"
#include "covenant/gemm.h"
#ifdef COVENANT_HAVE_CUDA
#include "covenant/cuda_gemm.h"
#endif
#include "covenant/thread_pool.h"
#include "comm_wrap.h"
#include "engine_wrap.h"
#include "quant_wrap.h"

namespace {

Napi::Value BuildInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("blas", covenant::gemm_have_blas());
  o.Set("blasInfo", covenant::gemm_blas_info());
  o.Set("gemmDefault", covenant::gemm_backend_name(covenant::gemm_default_backend()));
  o.Set("packedIsa", covenant::gemm_packed_isa());
  o.Set("hardwareThreads", covenant::ThreadPool::hardware_threads());
  o.Set("crc32c", covenant::crc32c_impl_name(covenant::Crc32cImpl::Auto));
#ifdef COVENANT_HAVE_CUDA
  o.Set("cuda", true);  // built with the CUDA backend (whether a device exists is Engine.create's question)
  o.Set("cudaGemm", covenant::cuda::gemm_impl_name(covenant::cuda::GpuGemmImpl::Auto));
#else
  o.Set("cuda", false);
  o.Set("cudaGemm", "none");
#endif
  return o;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("NativeEngine", covenant_addon::EngineWrap::Define(env));
  exports.Set("buildInfo", Napi::Function::New(env, BuildInfo));
  exports.Set("quantize", Napi::Function::New(env, covenant_addon::Quantize));
  exports.Set("dequantize", Napi::Function::New(env, covenant_addon::Dequantize));
  exports.Set("dequantizeAccumulate", Napi::Function::New(env, covenant_addon::DequantizeAccumulate));
  exports.Set("quantInfo", Napi::Function::New(env, covenant_addon::QuantInfo));
  exports.Set("NativeCompressor", covenant_addon::CompressorWrap::Define(env));
  exports.Set("allReduceStart", Napi::Function::New(env, covenant_addon::AllReduceStart));
  // A collective still running when Node tears the environment down is aborted, so its thread ends.
  env.AddCleanupHook([e = napi_env(env)] { covenant_addon::AbortAllCollectives(e); });
  return exports;
}

}  // namespace

NODE_API_MODULE(covenant, Init)
