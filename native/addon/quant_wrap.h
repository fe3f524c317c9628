// int8 compression binding: quantize / dequantize / dequantizeAccumulate (promises; the work runs on a libuv
// worker thread and the addon's quantization pool) and the JS-visible Compressor class. Arguments are checked
// and read into C++ values on the main thread; no logic lives here (it is in native/quant/).
#pragma once
#include <napi.h>

#include <memory>

#include "covenant/quant.h"

namespace covenant_addon {

// quantize(x: Float32Array, block) -> Promise<{codes: Int8Array, scales: Float32Array}>
Napi::Value Quantize(const Napi::CallbackInfo& info);
// dequantize(codes: Int8Array, scales: Float32Array, block, out?: Float32Array) -> Promise<Float32Array>
Napi::Value Dequantize(const Napi::CallbackInfo& info);
// dequantizeAccumulate(acc: Float32Array, codes, scales, block) -> Promise<Float32Array> (acc)
Napi::Value DequantizeAccumulate(const Napi::CallbackInfo& info);
// quantInfo() -> {isa, threads}
Napi::Value QuantInfo(const Napi::CallbackInfo& info);

class CompressorWrap : public Napi::ObjectWrap<CompressorWrap> {
 public:
  static Napi::Function Define(Napi::Env env);
  // new NativeCompressor(n, block)
  explicit CompressorWrap(const Napi::CallbackInfo& info);

 private:
  Napi::Value Size(const Napi::CallbackInfo& info);
  Napi::Value Block(const Napi::CallbackInfo& info);
  Napi::Value Compress(const Napi::CallbackInfo& info);
  Napi::Value Residual(const Napi::CallbackInfo& info);
  Napi::Value LoadResidual(const Napi::CallbackInfo& info);
  Napi::Value Reset(const Napi::CallbackInfo& info);
  void idle(Napi::Env env, const char* what);

  std::shared_ptr<covenant::ErrorFeedbackCompressor> c_;
  std::shared_ptr<bool> busy_ = std::make_shared<bool>(false);
};

}  // namespace covenant_addon
