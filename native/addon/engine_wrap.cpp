// Engine binding. Arguments are read into plain C++ values on the main thread; the worker threads touch
// only C++ data; every C++ exception becomes a rejected promise or a thrown JS error. One NativeEngine wraps
// the CPU GPT or, with device 'cuda' in a build with COVENANT_HAVE_CUDA, the CUDA GPTCuda (Engines).
#include "engine_wrap.h"

#include <cmath>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "covenant/gemm.h"
#include "covenant/quant.h"
#include "covenant/round_delta.h"
#include "arg_errors.h"

namespace covenant_addon {

using covenant::GPT;
#ifdef COVENANT_HAVE_CUDA
using covenant::GPTCuda;
#endif

namespace {

int int_arg(const Napi::CallbackInfo& info, size_t i, const char* name, int lo) {
  if (info.Length() <= i || !info[i].IsNumber()) type_error(info.Env(), std::string("Expected an integer for ") + name);
  double v = info[i].As<Napi::Number>().DoubleValue();
  if (!std::isfinite(v) || v != std::floor(v) || v < lo || v > 2147483647.0)
    range_error(info.Env(), std::string("Expected an integer >= ") + std::to_string(lo) + " for " + name + " but received " + std::to_string(v));
  return int(v);
}

int int_field(Napi::Object o, const char* key, const char* where) {
  Napi::Value v = o.Get(key);
  if (!v.IsNumber()) type_error(o.Env(), std::string("Expected a positive integer for ") + where + "." + key);
  double d = v.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d) || d != std::floor(d) || d < 1 || d > 1e9)
    range_error(o.Env(), std::string("Expected a positive integer for ") + where + "." + key + " but received " + std::to_string(d));
  return int(d);
}

float float_field(Napi::Object o, const char* key, float fallback) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined()) return fallback;
  if (!v.IsNumber()) type_error(o.Env(), std::string("Expected a number for opt.") + key);
  double d = v.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d)) range_error(o.Env(), std::string("Expected a finite number for opt.") + key + " but received " + std::to_string(d));
  return float(d);
}

std::vector<int32_t> tokens_arg(const Napi::CallbackInfo& info, size_t i, size_t expected, const char* name) {
  if (info.Length() <= i || !info[i].IsTypedArray() ||
      info[i].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
    type_error(info.Env(), std::string("Expected an Int32Array for ") + name);
  Napi::Int32Array a = info[i].As<Napi::Int32Array>();
  if (a.ElementLength() != expected)
    range_error(info.Env(), std::string("Expected ") + name + " to hold " + std::to_string(expected) + " tokens but it holds " + std::to_string(a.ElementLength()));
  return std::vector<int32_t>(a.Data(), a.Data() + expected);
}

// A Float32Array of n (numParams) elements.
Napi::Float32Array params_sized_arg(const Napi::CallbackInfo& info, size_t i, const std::string& name, size_t n) {
  if (info.Length() <= i || !info[i].IsTypedArray() || info[i].As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
    type_error(info.Env(), "Expected a Float32Array for " + name);
  Napi::Float32Array a = info[i].As<Napi::Float32Array>();
  if (a.ElementLength() != n)
    range_error(info.Env(), "Expected " + name + " to hold numParams = " + std::to_string(n) + " values but it holds " +
                                std::to_string(a.ElementLength()));
  return a;
}

// Runs `work` on a libuv worker thread and settles a promise with `done`'s value.
class Job : public Napi::AsyncWorker {
 public:
  using Work = std::function<void()>;
  using Done = std::function<Napi::Value(Napi::Env)>;
  Job(Napi::Env env, std::shared_ptr<void> keep, std::shared_ptr<bool> busy, Work work, Done done)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), keep_(std::move(keep)),
        busy_(std::move(busy)), work_(std::move(work)), done_(std::move(done)) {}
  Napi::Promise Promise() { return deferred_.Promise(); }
  void Execute() override {
    try {
      work_();
    } catch (const WorkerRangeError& e) {
      range_error_ = e.what();
    } catch (const std::exception& e) {
      SetError(e.what());
    }
  }
  // While Node tears the environment down (a worker thread terminated mid-step) no JS value can be made:
  // the promise is left unsettled instead of letting the exception end the process.
  void OnOK() override {
    *busy_ = false;
    try {
      if (!range_error_.empty()) deferred_.Reject(Napi::RangeError::New(Env(), range_error_).Value());
      else deferred_.Resolve(done_(Env()));
    } catch (const Napi::Error&) {
    }
  }
  void OnError(const Napi::Error& e) override {
    *busy_ = false;
    try {
      deferred_.Reject(e.Value());
    } catch (const Napi::Error&) {
    }
  }

 private:
  Napi::Promise::Deferred deferred_;
  std::shared_ptr<void> keep_;
  std::shared_ptr<bool> busy_;
  Work work_;
  Done done_;
  std::string range_error_;
};

Napi::Value schedule(Napi::Env env, const Engines& eng, std::shared_ptr<bool> busy, Job::Work work,
                     Job::Done done) {
  *busy = true;
  auto* job = new Job(env, eng.keep(), std::move(busy), std::move(work), std::move(done));
  Napi::Promise p = job->Promise();
  job->Queue();
  return p;
}

// An ArrayBuffer over `bytes` of native memory at data, which `owner` keeps alive until the buffer is collected.
Napi::ArrayBuffer external_buffer(Napi::Env env, std::shared_ptr<void> owner, void* data, size_t bytes) {
  auto* hold = new std::shared_ptr<void>(std::move(owner));
  return Napi::ArrayBuffer::New(env, data, bytes, [](Napi::Env, void*, std::shared_ptr<void>* h) { delete h; }, hold);
}

Napi::Float32Array shared_view(Napi::Env env, covenant::SharedFloats buf, size_t n) {
  return Napi::Float32Array::New(env, n, external_buffer(env, buf, buf.get(), n * sizeof(float)), 0);
}

// n uninitialized elements, freed with the last shared owner.
template <class T>
std::shared_ptr<T> alloc_array(size_t n) {
  return std::shared_ptr<T>(new T[n > 0 ? n : 1], std::default_delete<T[]>());
}

// Runs f on the main thread, turning a C++ exception (a CUDA error from a copy) into a JS Error.
template <class F>
decltype(auto) js_errors(Napi::Env env, F&& f) {
  try {
    return f();
  } catch (const Napi::Error&) {
    throw;
  } catch (const std::invalid_argument& e) {
    throw Napi::RangeError::New(env, e.what());
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, e.what());
  }
}

#ifdef COVENANT_HAVE_CUDA
GPTCuda::Buffer cuda_buffer(const std::string& which) {
  if (which == "params") return GPTCuda::Buffer::Params;
  if (which == "grads") return GPTCuda::Buffer::Grads;
  if (which == "adamM") return GPTCuda::Buffer::AdamM;
  return GPTCuda::Buffer::AdamV;
}
#endif

}  // namespace

Napi::Function EngineWrap::Define(Napi::Env env) {
  return DefineClass(env, "NativeEngine",
                     {InstanceMethod("numParams", &EngineWrap::NumParams), InstanceMethod("threads", &EngineWrap::Threads),
                      InstanceMethod("tensors", &EngineWrap::Tensors), InstanceMethod("view", &EngineWrap::View),
                      InstanceMethod("loadParams", &EngineWrap::LoadParams),
                      InstanceMethod("adamStep", &EngineWrap::AdamStep),
                      InstanceMethod("setAdamStep", &EngineWrap::SetAdamStep),
                      InstanceMethod("paramsHash", &EngineWrap::ParamsHash), InstanceMethod("step", &EngineWrap::Step),
                      InstanceMethod("forwardBackward", &EngineWrap::ForwardBackward),
                      InstanceMethod("evalLoss", &EngineWrap::EvalLoss), InstanceMethod("logits", &EngineWrap::Logits),
                      InstanceMethod("generate", &EngineWrap::Generate), InstanceMethod("device", &EngineWrap::Device),
                      InstanceMethod("markRoundStart", &EngineWrap::MarkRoundStart),
                      InstanceMethod("compressDelta", &EngineWrap::CompressDelta),
                      InstanceMethod("residual", &EngineWrap::Residual),
                      InstanceMethod("loadResidual", &EngineWrap::LoadResidual),
                      InstanceMethod("resetResidual", &EngineWrap::ResetResidual),
                      InstanceMethod("undoCompressDelta", &EngineWrap::UndoCompressDelta),
                      InstanceMethod("dispose", &EngineWrap::Dispose)});
}

// new NativeEngine(model, threads, seed, attention, gemm, device = 'cpu')
EngineWrap::EngineWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<EngineWrap>(info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject()) type_error(env, "Expected an object for model");
  Napi::Object m = info[0].As<Napi::Object>();
  covenant::GPTConfig cfg;
  cfg.vocab_size = int_field(m, "vocabSize", "model");
  cfg.max_seq_len = int_field(m, "maxSeqLen", "model");
  cfg.num_layers = int_field(m, "numLayers", "model");
  cfg.num_heads = int_field(m, "numHeads", "model");
  cfg.channels = int_field(m, "channels", "model");
  int threads = int_arg(info, 1, "threads", 0);
  int seed = int_arg(info, 2, "seed", 0);
  std::string attention = info.Length() > 3 && info[3].IsString() ? info[3].As<Napi::String>().Utf8Value() : "flash";
  std::string gemm = info.Length() > 4 && info[4].IsString() ? info[4].As<Napi::String>().Utf8Value() : "auto";
  std::string device = info.Length() > 5 && info[5].IsString() ? info[5].As<Napi::String>().Utf8Value() : "cpu";
  if (attention != "flash" && attention != "naive") range_error(env, "Expected 'flash' or 'naive' for attention but received " + attention);
  if (device != "cpu" && device != "cuda") range_error(env, "Expected 'cpu' or 'cuda' for device but received " + device);
  if (device == "cuda") {
    InitCuda(env, cfg, (uint64_t)seed, attention, gemm);
    return;
  }
  covenant::GemmBackend backend;
  if (gemm == "auto") backend = covenant::GemmBackend::Auto;
  else if (gemm == "blas") backend = covenant::GemmBackend::Blas;
  else if (gemm == "packed") backend = covenant::GemmBackend::Packed;
  else if (gemm == "ref") backend = covenant::GemmBackend::Ref;
  else range_error(env, "Expected 'auto', 'blas', 'packed' or 'ref' for gemm but received " + gemm);
  if (backend == covenant::GemmBackend::Blas && !covenant::gemm_have_blas())
    range_error(env, "gemm 'blas' is not available: this build found no BLAS. HINT: apt-get install libopenblas-dev, then npm run build:native");
  try {
    eng_.cpu = std::make_shared<GPT>(cfg, threads, (uint64_t)seed);
  } catch (const std::invalid_argument& e) {
    range_error(env, e.what());
  } catch (const std::bad_alloc&) {
    range_error(env, "not enough memory for a model of this shape");
  }
  eng_.cpu->set_attention(attention == "naive" ? covenant::AttentionKind::Naive : covenant::AttentionKind::Flash);
  eng_.cpu->set_gemm(backend);
}

// device 'cuda': the CUDA engine, or a JS Error saying why there is none. gemm must be 'auto' (the CUDA
// engine picks cuBLAS or its own kernel at build time).
void EngineWrap::InitCuda(Napi::Env env, const covenant::GPTConfig& cfg, uint64_t seed, const std::string& attention,
                          const std::string& gemm) {
#ifdef COVENANT_HAVE_CUDA
  if (gemm != "auto")
    range_error(env, "gemm '" + gemm + "' applies to the CPU engine only; device 'cuda' takes gemm 'auto' (cuBLAS where "
                     "the build found it, else its own GEMM kernel)");
  const std::string why = covenant::cuda_device_error();
  if (!why.empty())
    throw Napi::Error::New(env, "device 'cuda' is not available: " + why +
                                    ". HINT: check nvidia-smi and CUDA_VISIBLE_DEVICES, or use device 'cpu'");
  try {
    eng_.gpu = std::make_shared<GPTCuda>(cfg, seed);
  } catch (const std::invalid_argument& e) {
    range_error(env, e.what());
  } catch (const std::bad_alloc&) {
    range_error(env, "not enough host memory for a model of this shape");
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, std::string("device 'cuda': ") + e.what());
  }
  eng_.gpu->set_attention(attention == "naive" ? covenant::AttentionKind::Naive : covenant::AttentionKind::Flash);
#else
  (void)cfg;
  (void)seed;
  (void)attention;
  (void)gemm;
  throw Napi::Error::New(env, "device 'cuda' is not available: this build has no CUDA backend. HINT: install the CUDA "
                              "toolkit (nvcc) and rebuild with `npm run build:native`, or use device 'cpu'");
#endif
}

Engines EngineWrap::any(Napi::Env env) {
  if (!eng_) throw Napi::Error::New(env, "Engine is disposed");
  return eng_;
}

Engines EngineWrap::live(Napi::Env env) {
  if (!eng_) throw Napi::Error::New(env, "Engine is disposed");
  if (*busy_) throw Napi::Error::New(env, "Engine is busy: await the previous step/evalLoss/logits/generate/compressDelta call first");
  return eng_;
}

// device() -> 'cpu' | 'cuda'
Napi::Value EngineWrap::Device(const Napi::CallbackInfo& info) {
  Engines e = any(info.Env());
  return Napi::String::New(info.Env(), e.on_gpu() ? "cuda" : "cpu");
}

Napi::Value EngineWrap::NumParams(const Napi::CallbackInfo& info) {
  Engines e = any(info.Env());
  return Napi::Number::New(info.Env(), double(e.run([](auto& m) { return m.num_params(); })));
}

// Compute threads of the CPU engine; 1 (the host thread that drives the device) for the CUDA engine.
Napi::Value EngineWrap::Threads(const Napi::CallbackInfo& info) {
  Engines e = any(info.Env());
  return Napi::Number::New(info.Env(), e.on_gpu() ? 1 : e.cpu->threads());
}

Napi::Value EngineWrap::Tensors(const Napi::CallbackInfo& info) {
  Engines e = any(info.Env());
  Napi::Env env = info.Env();
  const auto& ts = e.run([](auto& m) -> const std::vector<covenant::ParamTensorInfo>& { return m.tensors(); });
  Napi::Array out = Napi::Array::New(env, ts.size());
  for (size_t i = 0; i < ts.size(); ++i) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("name", ts[i].name);
    o.Set("offset", double(ts[i].offset));
    o.Set("size", double(ts[i].size));
    o.Set("decay", ts[i].decay);
    out.Set(uint32_t(i), o);
  }
  return out;
}

// view('params' | 'grads' | 'adamM' | 'adamV') -> zero-copy Float32Array that keeps the buffer alive.
// CUDA engine: the buffer is downloaded into its host copy first (refused while a call is in flight); the
// array is that host copy, refreshed in place by the next view of the same buffer.
Napi::Value EngineWrap::View(const Napi::CallbackInfo& info) {
  Engines e = any(info.Env());
  std::string which = info.Length() > 0 && info[0].IsString() ? info[0].As<Napi::String>().Utf8Value() : "";
  if (which != "params" && which != "grads" && which != "adamM" && which != "adamV")
    range_error(info.Env(), "Expected 'params', 'grads', 'adamM' or 'adamV' for view but received " + which);
#ifdef COVENANT_HAVE_CUDA
  if (e.on_gpu()) {
    Engines g = live(info.Env());
    covenant::SharedFloats host = js_errors(info.Env(), [&] { return g.gpu->host_copy(cuda_buffer(which)); });
    return shared_view(info.Env(), host, g.gpu->num_params());
  }
#endif
  std::shared_ptr<GPT> gpt = e.cpu;
  covenant::SharedFloats buf;
  if (which == "params") buf = gpt->params_shared();
  else if (which == "grads") buf = gpt->grads_shared();
  else if (which == "adamM") buf = gpt->adam_m_shared();
  else buf = gpt->adam_v_shared();
  return shared_view(info.Env(), buf, gpt->num_params());
}

// loadParams(which, Float32Array): copies into the engine's buffer.
Napi::Value EngineWrap::LoadParams(const Napi::CallbackInfo& info) {
  Engines e = live(info.Env());
  std::string which = info.Length() > 0 && info[0].IsString() ? info[0].As<Napi::String>().Utf8Value() : "";
  if (which != "params" && which != "adamM" && which != "adamV")
    range_error(info.Env(), "Expected 'params', 'adamM' or 'adamV' as the target but received " + which);
  Napi::Float32Array src = params_sized_arg(info, 1, which, e.run([](auto& m) { return m.num_params(); }));
#ifdef COVENANT_HAVE_CUDA
  if (e.on_gpu()) {
    js_errors(info.Env(), [&] { e.gpu->upload(cuda_buffer(which), src.Data()); });
    return info.Env().Undefined();
  }
#endif
  GPT* gpt = e.cpu.get();
  float* dst = which == "params" ? gpt->params() : which == "adamM" ? gpt->adam_m() : gpt->adam_v();
  if (src.Data() != dst) std::memmove(dst, src.Data(), gpt->num_params() * sizeof(float));
  return info.Env().Undefined();
}

Napi::Value EngineWrap::AdamStep(const Napi::CallbackInfo& info) {
  Engines e = any(info.Env());
  return Napi::Number::New(info.Env(), e.run([](auto& m) { return m.adam_step(); }));
}

Napi::Value EngineWrap::SetAdamStep(const Napi::CallbackInfo& info) {
  Engines e = live(info.Env());
  const int t = int_arg(info, 0, "optimizerStep", 0);
  e.run([t](auto& m) { m.set_adam_step(t); });
  return info.Env().Undefined();
}

Napi::Value EngineWrap::ParamsHash(const Napi::CallbackInfo& info) {
  Engines e = live(info.Env());
  return Napi::String::New(info.Env(), js_errors(info.Env(), [&] { return e.run([](auto& m) { return m.params_hash(); }); }));
}

// step(tokens, B, T, opt) -> Promise<{loss, gradNorm}>
Napi::Value EngineWrap::Step(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Engines gpt = live(env);
  int B = int_arg(info, 1, "B", 1), T = int_arg(info, 2, "T", 1);
  auto tokens = tokens_arg(info, 0, (size_t)B * (T + 1), "tokens");
  if (info.Length() < 4 || !info[3].IsObject()) type_error(env, "Expected an object for opt");
  Napi::Object o = info[3].As<Napi::Object>();
  covenant::AdamWConfig opt;
  opt.lr = float_field(o, "lr", opt.lr);
  opt.beta1 = float_field(o, "beta1", opt.beta1);
  opt.beta2 = float_field(o, "beta2", opt.beta2);
  opt.eps = float_field(o, "eps", opt.eps);
  opt.weight_decay = float_field(o, "weightDecay", opt.weight_decay);
  opt.grad_clip = float_field(o, "gradClip", opt.grad_clip);
  auto result = std::make_shared<covenant::StepResult>();
  return schedule(env, gpt, busy_, [=] { *result = gpt.run([&](auto& m) { return m.train_step(tokens.data(), B, T, opt); }); },
                  [=](Napi::Env e) {
                    Napi::Object r = Napi::Object::New(e);
                    r.Set("loss", result->loss);
                    r.Set("gradNorm", result->grad_norm);
                    return r;
                  });
}

Napi::Value EngineWrap::ForwardBackward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Engines gpt = live(env);
  int B = int_arg(info, 1, "B", 1), T = int_arg(info, 2, "T", 1);
  auto tokens = tokens_arg(info, 0, (size_t)B * (T + 1), "tokens");
  auto loss = std::make_shared<float>(0.f);
  return schedule(env, gpt, busy_, [=] { *loss = gpt.run([&](auto& m) { return m.forward_backward(tokens.data(), B, T); }); },
                  [=](Napi::Env e) {
                    Napi::Object r = Napi::Object::New(e);
                    r.Set("loss", *loss);
                    return r;
                  });
}

Napi::Value EngineWrap::EvalLoss(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Engines gpt = live(env);
  int B = int_arg(info, 1, "B", 1), T = int_arg(info, 2, "T", 1);
  auto tokens = tokens_arg(info, 0, (size_t)B * (T + 1), "tokens");
  auto loss = std::make_shared<float>(0.f);
  return schedule(env, gpt, busy_, [=] { *loss = gpt.run([&](auto& m) { return m.eval_loss(tokens.data(), B, T); }); },
                  [=](Napi::Env e) { return Napi::Number::New(e, *loss); });
}

Napi::Value EngineWrap::Logits(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Engines gpt = live(env);
  int B = int_arg(info, 1, "B", 1), T = int_arg(info, 2, "T", 1);
  auto tokens = tokens_arg(info, 0, (size_t)B * T, "tokens");
  size_t n = (size_t)B * T * gpt.run([](auto& m) { return m.config().vocab_size; });
  auto out = std::make_shared<std::vector<float>>(n);
  return schedule(env, gpt, busy_, [=] { gpt.run([&](auto& m) { m.logits(out->data(), tokens.data(), B, T); }); },
                  [=](Napi::Env e) {
                    Napi::Float32Array a = Napi::Float32Array::New(e, n);
                    std::memcpy(a.Data(), out->data(), n * sizeof(float));
                    return a;
                  });
}

// generate(prompt Int32Array, maxNew, temperature, topK, seed) -> Promise<Int32Array>
Napi::Value EngineWrap::Generate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Engines gpt = live(env);
  if (info.Length() < 1 || !info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
    type_error(env, "Expected an Int32Array for prompt");
  Napi::Int32Array p = info[0].As<Napi::Int32Array>();
  std::vector<int32_t> prompt(p.Data(), p.Data() + p.ElementLength());
  int max_new = int_arg(info, 1, "maxNewTokens", 0);
  if (info.Length() < 3 || !info[2].IsNumber()) type_error(env, "Expected a number for temperature");
  double temperature = info[2].As<Napi::Number>().DoubleValue();
  if (!std::isfinite(temperature) || temperature < 0) range_error(env, "Expected a finite number >= 0 for temperature");
  int top_k = int_arg(info, 3, "topK", 0);
  int seed = int_arg(info, 4, "seed", 0);
  auto out = std::make_shared<std::vector<int32_t>>();
  return schedule(env, gpt, busy_, [=] { *out = gpt.run([&](auto& m) { return m.generate(prompt, max_new, float(temperature), top_k, seed); }); },
                  [=](Napi::Env e) {
                    Napi::Int32Array a = Napi::Int32Array::New(e, out->size());
                    if (!out->empty()) std::memcpy(a.Data(), out->data(), out->size() * sizeof(int32_t));
                    return a;
                  });
}

// ---- the outer loop's Δ (covenant/round_delta.h): θ_start and the residual live in the engine ----

// markRoundStart(): θ_start = the current parameters (a device-to-device copy on the CUDA engine).
Napi::Value EngineWrap::MarkRoundStart(const Napi::CallbackInfo& info) {
  Engines e = live(info.Env());
  js_errors(info.Env(), [&] { e.run([](auto& m) { m.mark_round_start(); }); });
  return info.Env().Undefined();
}

// compressDelta(block) -> Promise<{codes: Int8Array, scales: Float32Array}>: Δ = θ_start − θ_now with error
// feedback, on a worker thread. A non-finite Δ rejects with the Compressor's RangeError (named "delta").
Napi::Value EngineWrap::CompressDelta(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Engines eng = live(env);
  const int block = int_arg(info, 0, "block", 1);
  if (!eng.run([](auto& m) { return m.round_marked(); })) throw Napi::Error::New(env, covenant::round_delta_unmarked_error());
  const size_t n = eng.run([](auto& m) { return m.num_params(); });
  const size_t nb = covenant::quant_num_blocks(n, block);
  auto codes = js_errors(env, [&] { return alloc_array<int8_t>(n); });
  auto scales = js_errors(env, [&] { return alloc_array<float>(nb); });
  return schedule(env, eng, busy_,
                  [=] {
                    try {
                      eng.run([&](auto& m) { m.compress_delta(codes.get(), scales.get(), block); });
                    } catch (const covenant::NonFiniteError& e) {
                      throw WorkerRangeError(nonfinite_message("delta", e));
                    }
                  },
                  [=](Napi::Env e) {
                    Napi::Object r = Napi::Object::New(e);
                    r.Set("codes", Napi::Int8Array::New(e, n, external_buffer(e, codes, codes.get(), n), 0));
                    r.Set("scales", Napi::Float32Array::New(e, nb, external_buffer(e, scales, scales.get(), nb * sizeof(float)), 0));
                    return r;
                  });
}

// residual() -> a copy of the error-feedback residual (Float32Array, numParams).
Napi::Value EngineWrap::Residual(const Napi::CallbackInfo& info) {
  Engines e = live(info.Env());
  Napi::Float32Array out = Napi::Float32Array::New(info.Env(), e.run([](auto& m) { return m.num_params(); }));
  js_errors(info.Env(), [&] { e.run([&](auto& m) { m.copy_delta_residual(out.Data()); }); });
  return out;
}

// loadResidual(r: Float32Array): copies in; a non-finite element is a RangeError and changes nothing.
Napi::Value EngineWrap::LoadResidual(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Engines e = live(env);
  Napi::Float32Array r = params_sized_arg(info, 0, "residual", e.run([](auto& m) { return m.num_params(); }));
  js_errors(env, [&] {
    try {
      e.run([&](auto& m) { m.load_delta_residual(r.Data()); });
    } catch (const covenant::NonFiniteError& err) {
      range_error(env, nonfinite_residual_message(err));
    }
  });
  return env.Undefined();
}

Napi::Value EngineWrap::ResetResidual(const Napi::CallbackInfo& info) {
  Engines e = live(info.Env());
  js_errors(info.Env(), [&] { e.run([](auto& m) { m.reset_delta_residual(); }); });
  return info.Env().Undefined();
}

// undoCompressDelta(): the residual from before the last compressDelta; false when there is nothing to undo.
Napi::Value EngineWrap::UndoCompressDelta(const Napi::CallbackInfo& info) {
  Engines e = live(info.Env());
  bool undone = false;
  js_errors(info.Env(), [&] { undone = e.run([](auto& m) { return m.undo_compress_delta(); }); });
  return Napi::Boolean::New(info.Env(), undone);
}

// Releases the engine; a call in flight keeps it alive until it settles. Views stay valid.
Napi::Value EngineWrap::Dispose(const Napi::CallbackInfo& info) {
  eng_.reset();
  return info.Env().Undefined();
}

}  // namespace covenant_addon
