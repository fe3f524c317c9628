// The JS-visible Engine class: converts and checks arguments, schedules work on Napi::AsyncWorker
// threads, and exposes the engine's flat buffers as zero-copy Float32Arrays. No model logic here.
#pragma once
#include <napi.h>

#include <memory>
#include <string>

#include "covenant/gpt.h"
#include "covenant/gpt_cuda.h"

namespace covenant_addon {

// The engine behind one NativeEngine: the CPU GPT, or (builds with COVENANT_HAVE_CUDA) the CUDA GPTCuda.
// run(f) calls f with whichever exists; both classes share the methods the binding uses.
struct Engines {
  std::shared_ptr<covenant::GPT> cpu;
#ifdef COVENANT_HAVE_CUDA
  std::shared_ptr<covenant::GPTCuda> gpu;
  bool on_gpu() const { return gpu != nullptr; }
#else
  bool on_gpu() const { return false; }
#endif
  explicit operator bool() const { return cpu != nullptr || on_gpu(); }
  std::shared_ptr<void> keep() const {
#ifdef COVENANT_HAVE_CUDA
    if (gpu) return gpu;
#endif
    return cpu;
  }
  template <class F>
  decltype(auto) run(F&& f) const {
#ifdef COVENANT_HAVE_CUDA
    if (gpu) return f(*gpu);
#endif
    return f(*cpu);
  }
  void reset() {
    cpu.reset();
#ifdef COVENANT_HAVE_CUDA
    gpu.reset();
#endif
  }
};

class EngineWrap : public Napi::ObjectWrap<EngineWrap> {
 public:
  static Napi::Function Define(Napi::Env env);
  explicit EngineWrap(const Napi::CallbackInfo& info);

 private:
  Engines live(Napi::Env env);
  Engines any(Napi::Env env);  // not disposed (busy allowed)
  Napi::Value NumParams(const Napi::CallbackInfo& info);
  Napi::Value Threads(const Napi::CallbackInfo& info);
  Napi::Value Tensors(const Napi::CallbackInfo& info);
  Napi::Value View(const Napi::CallbackInfo& info);
  Napi::Value LoadParams(const Napi::CallbackInfo& info);
  Napi::Value AdamStep(const Napi::CallbackInfo& info);
  Napi::Value SetAdamStep(const Napi::CallbackInfo& info);
  Napi::Value ParamsHash(const Napi::CallbackInfo& info);
  Napi::Value Step(const Napi::CallbackInfo& info);
  Napi::Value ForwardBackward(const Napi::CallbackInfo& info);
  Napi::Value EvalLoss(const Napi::CallbackInfo& info);
  Napi::Value Logits(const Napi::CallbackInfo& info);
  Napi::Value Generate(const Napi::CallbackInfo& info);
  Napi::Value Device(const Napi::CallbackInfo& info);
  Napi::Value MarkRoundStart(const Napi::CallbackInfo& info);
  Napi::Value CompressDelta(const Napi::CallbackInfo& info);
  Napi::Value Residual(const Napi::CallbackInfo& info);
  Napi::Value LoadResidual(const Napi::CallbackInfo& info);
  Napi::Value ResetResidual(const Napi::CallbackInfo& info);
  Napi::Value UndoCompressDelta(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);
  void InitCuda(Napi::Env env, const covenant::GPTConfig& cfg, uint64_t seed, const std::string& attention,
                const std::string& gemm);

  Engines eng_;
  std::shared_ptr<bool> busy_ = std::make_shared<bool>(false);
};

}  // namespace covenant_addon
