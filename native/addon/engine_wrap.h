// The JS-visible Engine class: converts and checks arguments, schedules work on Napi::AsyncWorker
// threads, and exposes the engine's flat buffers as zero-copy Float32Arrays. No model logic here.
#pragma once
#include <napi.h>

#include <memory>

#include "covenant/gpt.h"

namespace covenant_addon {

class EngineWrap : public Napi::ObjectWrap<EngineWrap> {
 public:
  static Napi::Function Define(Napi::Env env);
  explicit EngineWrap(const Napi::CallbackInfo& info);

 private:
  std::shared_ptr<covenant::GPT> live(Napi::Env env);
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
  Napi::Value Dispose(const Napi::CallbackInfo& info);

  std::shared_ptr<covenant::GPT> gpt_;
  std::shared_ptr<bool> busy_ = std::make_shared<bool>(false);
};

}  // namespace covenant_addon
