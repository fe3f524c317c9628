// Engine binding. Arguments are read into plain C++ values on the main thread; the worker threads touch
// only C++ data; every C++ exception becomes a rejected promise or a thrown JS error.
#include "engine_wrap.h"

#include <cmath>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "covenant/gemm.h"
#include "arg_errors.h"

namespace covenant_addon {

using covenant::GPT;

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

// Runs `work` on a libuv worker thread and settles a promise with `done`'s value.
class Job : public Napi::AsyncWorker {
 public:
  using Work = std::function<void()>;
  using Done = std::function<Napi::Value(Napi::Env)>;
  Job(Napi::Env env, std::shared_ptr<GPT> keep, std::shared_ptr<bool> busy, Work work, Done done)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), keep_(std::move(keep)),
        busy_(std::move(busy)), work_(std::move(work)), done_(std::move(done)) {}
  Napi::Promise Promise() { return deferred_.Promise(); }
  void Execute() override {
    try {
      work_();
    } catch (const std::exception& e) {
      SetError(e.what());
    }
  }
  // While Node tears the environment down (a worker thread terminated mid-step) no JS value can be made:
  // the promise is left unsettled instead of letting the exception end the process.
  void OnOK() override {
    *busy_ = false;
    try {
      deferred_.Resolve(done_(Env()));
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
  std::shared_ptr<GPT> keep_;
  std::shared_ptr<bool> busy_;
  Work work_;
  Done done_;
};

Napi::Value schedule(Napi::Env env, std::shared_ptr<GPT> gpt, std::shared_ptr<bool> busy, Job::Work work,
                     Job::Done done) {
  *busy = true;
  auto* job = new Job(env, std::move(gpt), std::move(busy), std::move(work), std::move(done));
  Napi::Promise p = job->Promise();
  job->Queue();
  return p;
}

Napi::Float32Array shared_view(Napi::Env env, covenant::SharedFloats buf, size_t n) {
  auto* hold = new covenant::SharedFloats(buf);
  Napi::ArrayBuffer ab = Napi::ArrayBuffer::New(
      env, buf.get(), n * sizeof(float), [](Napi::Env, void*, covenant::SharedFloats* h) { delete h; }, hold);
  return Napi::Float32Array::New(env, n, ab, 0);
}

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
                      InstanceMethod("generate", &EngineWrap::Generate), InstanceMethod("dispose", &EngineWrap::Dispose)});
}

// new NativeEngine(model, threads, seed, attention, gemm)
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
  if (attention != "flash" && attention != "naive") range_error(env, "Expected 'flash' or 'naive' for attention but received " + attention);
  covenant::GemmBackend backend;
  if (gemm == "auto") backend = covenant::GemmBackend::Auto;
  else if (gemm == "blas") backend = covenant::GemmBackend::Blas;
  else if (gemm == "packed") backend = covenant::GemmBackend::Packed;
  else if (gemm == "ref") backend = covenant::GemmBackend::Ref;
  else range_error(env, "Expected 'auto', 'blas', 'packed' or 'ref' for gemm but received " + gemm);
  if (backend == covenant::GemmBackend::Blas && !covenant::gemm_have_blas())
    range_error(env, "gemm 'blas' is not available: this build found no BLAS. HINT: apt-get install libopenblas-dev, then npm run build:native");
  try {
    gpt_ = std::make_shared<GPT>(cfg, threads, (uint64_t)seed);
  } catch (const std::invalid_argument& e) {
    range_error(env, e.what());
  } catch (const std::bad_alloc&) {
    range_error(env, "not enough memory for a model of this shape");
  }
  gpt_->set_attention(attention == "naive" ? covenant::AttentionKind::Naive : covenant::AttentionKind::Flash);
  gpt_->set_gemm(backend);
}

std::shared_ptr<GPT> EngineWrap::live(Napi::Env env) {
  if (!gpt_) throw Napi::Error::New(env, "Engine is disposed");
  if (*busy_) throw Napi::Error::New(env, "Engine is busy: await the previous step/evalLoss/logits/generate call first");
  return gpt_;
}

Napi::Value EngineWrap::NumParams(const Napi::CallbackInfo& info) {
  if (!gpt_) throw Napi::Error::New(info.Env(), "Engine is disposed");
  return Napi::Number::New(info.Env(), double(gpt_->num_params()));
}

Napi::Value EngineWrap::Threads(const Napi::CallbackInfo& info) {
  if (!gpt_) throw Napi::Error::New(info.Env(), "Engine is disposed");
  return Napi::Number::New(info.Env(), gpt_->threads());
}

Napi::Value EngineWrap::Tensors(const Napi::CallbackInfo& info) {
  if (!gpt_) throw Napi::Error::New(info.Env(), "Engine is disposed");
  Napi::Env env = info.Env();
  const auto& ts = gpt_->tensors();
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
Napi::Value EngineWrap::View(const Napi::CallbackInfo& info) {
  if (!gpt_) throw Napi::Error::New(info.Env(), "Engine is disposed");
  std::string which = info.Length() > 0 && info[0].IsString() ? info[0].As<Napi::String>().Utf8Value() : "";
  covenant::SharedFloats buf;
  if (which == "params") buf = gpt_->params_shared();
  else if (which == "grads") buf = gpt_->grads_shared();
  else if (which == "adamM") buf = gpt_->adam_m_shared();
  else if (which == "adamV") buf = gpt_->adam_v_shared();
  else range_error(info.Env(), "Expected 'params', 'grads', 'adamM' or 'adamV' for view but received " + which);
  return shared_view(info.Env(), buf, gpt_->num_params());
}

// loadParams(which, Float32Array): copies into the engine's buffer.
Napi::Value EngineWrap::LoadParams(const Napi::CallbackInfo& info) {
  auto gpt = live(info.Env());
  std::string which = info.Length() > 0 && info[0].IsString() ? info[0].As<Napi::String>().Utf8Value() : "";
  float* dst = which == "params" ? gpt->params() : which == "adamM" ? gpt->adam_m() : which == "adamV" ? gpt->adam_v() : nullptr;
  if (!dst) range_error(info.Env(), "Expected 'params', 'adamM' or 'adamV' as the target but received " + which);
  if (info.Length() < 2 || !info[1].IsTypedArray() || info[1].As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
    type_error(info.Env(), "Expected a Float32Array for " + which);
  Napi::Float32Array src = info[1].As<Napi::Float32Array>();
  if (src.ElementLength() != gpt->num_params())
    range_error(info.Env(), "Expected " + which + " of length " + std::to_string(gpt->num_params()) + " but received " + std::to_string(src.ElementLength()));
  if (src.Data() != dst) std::memmove(dst, src.Data(), gpt->num_params() * sizeof(float));
  return info.Env().Undefined();
}

Napi::Value EngineWrap::AdamStep(const Napi::CallbackInfo& info) {
  if (!gpt_) throw Napi::Error::New(info.Env(), "Engine is disposed");
  return Napi::Number::New(info.Env(), gpt_->adam_step());
}

Napi::Value EngineWrap::SetAdamStep(const Napi::CallbackInfo& info) {
  auto gpt = live(info.Env());
  gpt->set_adam_step(int_arg(info, 0, "optimizerStep", 0));
  return info.Env().Undefined();
}

Napi::Value EngineWrap::ParamsHash(const Napi::CallbackInfo& info) {
  auto gpt = live(info.Env());
  return Napi::String::New(info.Env(), gpt->params_hash());
}

// step(tokens, B, T, opt) -> Promise<{loss, gradNorm}>
Napi::Value EngineWrap::Step(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto gpt = live(env);
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
  return schedule(env, gpt, busy_, [=] { *result = gpt->train_step(tokens.data(), B, T, opt); },
                  [=](Napi::Env e) {
                    Napi::Object r = Napi::Object::New(e);
                    r.Set("loss", result->loss);
                    r.Set("gradNorm", result->grad_norm);
                    return r;
                  });
}

Napi::Value EngineWrap::ForwardBackward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto gpt = live(env);
  int B = int_arg(info, 1, "B", 1), T = int_arg(info, 2, "T", 1);
  auto tokens = tokens_arg(info, 0, (size_t)B * (T + 1), "tokens");
  auto loss = std::make_shared<float>(0.f);
  return schedule(env, gpt, busy_, [=] { *loss = gpt->forward_backward(tokens.data(), B, T); },
                  [=](Napi::Env e) {
                    Napi::Object r = Napi::Object::New(e);
                    r.Set("loss", *loss);
                    return r;
                  });
}

Napi::Value EngineWrap::EvalLoss(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto gpt = live(env);
  int B = int_arg(info, 1, "B", 1), T = int_arg(info, 2, "T", 1);
  auto tokens = tokens_arg(info, 0, (size_t)B * (T + 1), "tokens");
  auto loss = std::make_shared<float>(0.f);
  return schedule(env, gpt, busy_, [=] { *loss = gpt->eval_loss(tokens.data(), B, T); },
                  [=](Napi::Env e) { return Napi::Number::New(e, *loss); });
}

Napi::Value EngineWrap::Logits(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto gpt = live(env);
  int B = int_arg(info, 1, "B", 1), T = int_arg(info, 2, "T", 1);
  auto tokens = tokens_arg(info, 0, (size_t)B * T, "tokens");
  size_t n = (size_t)B * T * gpt->config().vocab_size;
  auto out = std::make_shared<std::vector<float>>(n);
  return schedule(env, gpt, busy_, [=] { gpt->logits(out->data(), tokens.data(), B, T); },
                  [=](Napi::Env e) {
                    Napi::Float32Array a = Napi::Float32Array::New(e, n);
                    std::memcpy(a.Data(), out->data(), n * sizeof(float));
                    return a;
                  });
}

// generate(prompt Int32Array, maxNew, temperature, topK, seed) -> Promise<Int32Array>
Napi::Value EngineWrap::Generate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto gpt = live(env);
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
  return schedule(env, gpt, busy_, [=] { *out = gpt->generate(prompt, max_new, float(temperature), top_k, seed); },
                  [=](Napi::Env e) {
                    Napi::Int32Array a = Napi::Int32Array::New(e, out->size());
                    if (!out->empty()) std::memcpy(a.Data(), out->data(), out->size() * sizeof(int32_t));
                    return a;
                  });
}

// Releases the engine; a call in flight keeps it alive until it settles. Views stay valid.
Napi::Value EngineWrap::Dispose(const Napi::CallbackInfo& info) {
  gpt_.reset();
  return info.Env().Undefined();
}

}  // namespace covenant_addon
