// int8 compression binding. Every call checks its arguments on the main thread (TypeError / RangeError naming
// the argument), holds references to the typed arrays it reads or writes (zero-copy: the worker uses their
// memory directly, so callers must not modify them until the promise settles), and runs the work on a
// Napi::AsyncWorker. Non-finite input becomes a RangeError naming the index; C++ exceptions never escape.
#include "quant_wrap.h"

#include <cmath>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include "covenant/thread_pool.h"
#include "arg_errors.h"

namespace covenant_addon {

namespace {

// One process-wide pool for quantization, created on first use (one thread per hardware thread) and never
// destroyed. ThreadPool::run takes one caller at a time, so large jobs take the mutex; jobs small enough
// for one chunk run on their own libuv thread without it.
struct QuantPool {
  std::mutex mu;
  covenant::ThreadPool pool{0};
};
QuantPool& quant_pool() {
  static QuantPool* p = new QuantPool();
  return *p;
}
constexpr size_t kPoolThreshold = 1 << 16;  // elements; below this a single thread is as fast

template <class Fn>
void with_pool(size_t n, Fn&& fn) {
  if (n < kPoolThreshold) {
    fn(static_cast<covenant::ThreadPool*>(nullptr));
    return;
  }
  QuantPool& qp = quant_pool();
  std::lock_guard<std::mutex> lock(qp.mu);
  fn(&qp.pool);
}

int block_arg(const Napi::CallbackInfo& info, size_t i) {
  if (info.Length() <= i || !info[i].IsNumber()) type_error(info.Env(), "Expected an integer >= 1 for block");
  double v = info[i].As<Napi::Number>().DoubleValue();
  if (!std::isfinite(v) || v != std::floor(v) || v < 1 || v > 2147483647.0)
    range_error(info.Env(), "Expected an integer in [1, 2147483647] for block but received " + js_number(v));
  return int(v);
}

template <class Array>
Array typed_arg(const Napi::CallbackInfo& info, size_t i, napi_typedarray_type type, const char* type_name,
                const char* name) {
  if (info.Length() <= i || !info[i].IsTypedArray() || info[i].As<Napi::TypedArray>().TypedArrayType() != type)
    type_error(info.Env(), std::string("Expected ") + type_name + " for " + name);
  return info[i].As<Array>();
}

Napi::Float32Array f32_arg(const Napi::CallbackInfo& info, size_t i, const char* name) {
  return typed_arg<Napi::Float32Array>(info, i, napi_float32_array, "a Float32Array", name);
}
Napi::Int8Array i8_arg(const Napi::CallbackInfo& info, size_t i, const char* name) {
  return typed_arg<Napi::Int8Array>(info, i, napi_int8_array, "an Int8Array", name);
}

// Byte range of a typed array, for overlap checks.
struct Span {
  const char* name;
  const uint8_t* begin;
  size_t bytes;
};
template <class Array>
Span span_of(const char* name, const Array& a) {
  return Span{name, reinterpret_cast<const uint8_t*>(a.Data()), a.ElementLength() * sizeof(*a.Data())};
}
void check_disjoint(Napi::Env env, const Span& out, const std::vector<Span>& ins) {
  for (const Span& in : ins) {
    if (out.bytes == 0 || in.bytes == 0) continue;
    if (out.begin < in.begin + in.bytes && in.begin < out.begin + out.bytes)
      range_error(env, std::string(out.name) + " must not share memory with " + in.name);
  }
}

void check_scales_length(Napi::Env env, size_t n, int block, const Napi::Float32Array& scales) {
  const size_t nb = covenant::quant_num_blocks(n, block);
  if (scales.ElementLength() != nb)
    range_error(env, "Expected scales to hold ceil(codes.length / block) = " + std::to_string(nb) + " values but it holds " +
                         std::to_string(scales.ElementLength()));
}

// Runs `work` on a libuv worker thread and settles a promise with `done`'s value. Holds references to the
// typed arrays the work touches; a C++ exception becomes a rejection (RangeError for bad input).
class QuantJob : public Napi::AsyncWorker {
 public:
  using Work = std::function<void()>;
  // Gets the values of `keep` back through their references: napi_values of the scheduling call are only
  // valid in its handle scope, not when the job completes.
  using Done = std::function<Napi::Value(Napi::Env, const std::vector<Napi::ObjectReference>& kept)>;
  // `arg` names the input whose non-finite element a NonFiniteError reports.
  QuantJob(Napi::Env env, std::vector<Napi::Value> keep, std::shared_ptr<bool> busy, std::string arg, Work work,
           Done done)
      : Napi::AsyncWorker(env, "covenant.quant"), deferred_(Napi::Promise::Deferred::New(env)), busy_(std::move(busy)),
        arg_(std::move(arg)), work_(std::move(work)), done_(std::move(done)) {
    for (auto& v : keep) keep_.push_back(Napi::Persistent(v.As<Napi::Object>()));
  }
  Napi::Promise Promise() { return deferred_.Promise(); }

  void Execute() override {
    try {
      work_();
    } catch (const covenant::NonFiniteError& e) {
      range_ = true;
      msg_ = nonfinite_message(arg_, e);
    } catch (const std::invalid_argument& e) {
      range_ = true;
      msg_ = e.what();
    } catch (const std::bad_alloc&) {
      msg_ = "out of memory";
      failed_ = true;
    } catch (const std::exception& e) {
      msg_ = e.what();
      failed_ = true;
    }
  }

  // During environment teardown no JS value can be made: leave the promise unsettled, never throw.
  void OnOK() override {
    if (busy_) *busy_ = false;
    Napi::Env env = Env();
    try {
      if (range_) deferred_.Reject(Napi::RangeError::New(env, msg_).Value());
      else if (failed_) deferred_.Reject(Napi::Error::New(env, msg_).Value());
      else deferred_.Resolve(done_(env, keep_));
    } catch (const Napi::Error&) {
    }
  }
  void OnError(const Napi::Error& e) override {
    if (busy_) *busy_ = false;
    try {
      deferred_.Reject(e.Value());
    } catch (const Napi::Error&) {
    }
  }

 private:
  Napi::Promise::Deferred deferred_;
  std::vector<Napi::ObjectReference> keep_;
  std::shared_ptr<bool> busy_;
  std::string arg_;
  Work work_;
  Done done_;
  bool range_ = false, failed_ = false;
  std::string msg_;
};

Napi::Value schedule(Napi::Env env, std::vector<Napi::Value> keep, std::shared_ptr<bool> busy, std::string arg,
                     QuantJob::Work work, QuantJob::Done done) {
  if (busy) *busy = true;
  auto* job = new QuantJob(env, std::move(keep), std::move(busy), std::move(arg), std::move(work), std::move(done));
  Napi::Promise p = job->Promise();
  job->Queue();
  return p;
}

Napi::Object codes_and_scales(Napi::Env env, Napi::Value codes, Napi::Value scales) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("codes", codes);
  o.Set("scales", scales);
  return o;
}

}  // namespace

Napi::Value Quantize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Float32Array x = f32_arg(info, 0, "x");
  const int block = block_arg(info, 1);
  const size_t n = x.ElementLength();
  Napi::Int8Array codes = Napi::Int8Array::New(env, n);
  Napi::Float32Array scales = Napi::Float32Array::New(env, covenant::quant_num_blocks(n, block));
  const float* xp = x.Data();
  int8_t* qp = codes.Data();
  float* sp = scales.Data();
  return schedule(env, {x, codes, scales}, nullptr, "x",
                  [=] { with_pool(n, [&](covenant::ThreadPool* pool) { covenant::quantize_int8(qp, sp, xp, n, block, pool); }); },
                  [](Napi::Env e, const std::vector<Napi::ObjectReference>& k) -> Napi::Value {
                    return codes_and_scales(e, k[1].Value(), k[2].Value());
                  });
}

Napi::Value Dequantize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Int8Array codes = i8_arg(info, 0, "codes");
  Napi::Float32Array scales = f32_arg(info, 1, "scales");
  const int block = block_arg(info, 2);
  const size_t n = codes.ElementLength();
  check_scales_length(env, n, block, scales);
  Napi::Float32Array out;
  if (info.Length() > 3 && !info[3].IsUndefined()) {
    out = f32_arg(info, 3, "out");
    if (out.ElementLength() != n)
      range_error(env, "Expected out to hold codes.length = " + std::to_string(n) + " values but it holds " +
                           std::to_string(out.ElementLength()));
    check_disjoint(env, span_of("out", out), {span_of("codes", codes), span_of("scales", scales)});
  } else {
    out = Napi::Float32Array::New(env, n);
  }
  float* op = out.Data();
  const int8_t* qp = codes.Data();
  const float* sp = scales.Data();
  return schedule(env, {codes, scales, out}, nullptr, "codes",
                  [=] { with_pool(n, [&](covenant::ThreadPool* pool) { covenant::dequantize_int8(op, qp, sp, n, block, pool); }); },
                  [](Napi::Env, const std::vector<Napi::ObjectReference>& k) -> Napi::Value { return k[2].Value(); });
}

Napi::Value DequantizeAccumulate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Float32Array acc = f32_arg(info, 0, "acc");
  Napi::Int8Array codes = i8_arg(info, 1, "codes");
  Napi::Float32Array scales = f32_arg(info, 2, "scales");
  const int block = block_arg(info, 3);
  const size_t n = codes.ElementLength();
  if (acc.ElementLength() != n)
    range_error(env, "Expected acc to hold codes.length = " + std::to_string(n) + " values but it holds " +
                         std::to_string(acc.ElementLength()));
  check_scales_length(env, n, block, scales);
  check_disjoint(env, span_of("acc", acc), {span_of("codes", codes), span_of("scales", scales)});
  float* ap = acc.Data();
  const int8_t* qp = codes.Data();
  const float* sp = scales.Data();
  return schedule(env, {acc, codes, scales}, nullptr, "codes",
                  [=] {
                    with_pool(n, [&](covenant::ThreadPool* pool) {
                      covenant::dequantize_accumulate_int8(ap, qp, sp, n, block, pool);
                    });
                  },
                  [](Napi::Env, const std::vector<Napi::ObjectReference>& k) -> Napi::Value { return k[0].Value(); });
}

Napi::Value QuantInfo(const Napi::CallbackInfo& info) {
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("isa", covenant::quant_isa_name(covenant::quant_best_isa()));
  o.Set("threads", covenant::ThreadPool::hardware_threads());
  o.Set("poolThresholdElements", double(kPoolThreshold));
  return o;
}

// ---- Compressor ----

Napi::Function CompressorWrap::Define(Napi::Env env) {
  return DefineClass(env, "NativeCompressor",
                     {InstanceMethod("size", &CompressorWrap::Size), InstanceMethod("block", &CompressorWrap::Block),
                      InstanceMethod("compress", &CompressorWrap::Compress),
                      InstanceMethod("residual", &CompressorWrap::Residual),
                      InstanceMethod("loadResidual", &CompressorWrap::LoadResidual),
                      InstanceMethod("reset", &CompressorWrap::Reset)});
}

CompressorWrap::CompressorWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<CompressorWrap>(info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsNumber()) type_error(env, "Expected a non-negative integer for n");
  double n = info[0].As<Napi::Number>().DoubleValue();
  if (!std::isfinite(n) || n != std::floor(n) || n < 0 || n > 9007199254740991.0)
    range_error(env, "Expected a non-negative integer for n but received " + js_number(n));
  const int block = block_arg(info, 1);
  try {
    c_ = std::make_shared<covenant::ErrorFeedbackCompressor>(size_t(n), block);
  } catch (const std::bad_alloc&) {
    range_error(env, "not enough memory for a residual of n = " + js_number(n) + " floats");
  } catch (const std::invalid_argument& e) {
    range_error(env, e.what());
  }
}

void CompressorWrap::idle(Napi::Env env, const char* what) {
  if (*busy_)
    throw Napi::Error::New(env, std::string("Compressor is busy: await the pending compress() before ") + what);
}

Napi::Value CompressorWrap::Size(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), double(c_->size())); }
Napi::Value CompressorWrap::Block(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), c_->block()); }

// compress(input: Float32Array) -> Promise<{codes, scales}>
Napi::Value CompressorWrap::Compress(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  idle(env, "calling compress() again");
  Napi::Float32Array input = f32_arg(info, 0, "input");
  const size_t n = c_->size();
  if (input.ElementLength() != n)
    range_error(env, "Expected input to hold n = " + std::to_string(n) + " values but it holds " +
                         std::to_string(input.ElementLength()));
  check_disjoint(env, Span{"input", reinterpret_cast<const uint8_t*>(input.Data()), n * sizeof(float)},
                 {Span{"the residual", reinterpret_cast<const uint8_t*>(c_->residual()), n * sizeof(float)}});
  Napi::Int8Array codes = Napi::Int8Array::New(env, n);
  Napi::Float32Array scales = Napi::Float32Array::New(env, c_->num_blocks());
  auto c = c_;
  const float* ip = input.Data();
  int8_t* qp = codes.Data();
  float* sp = scales.Data();
  return schedule(env, {input, codes, scales}, busy_, "input",
                  [=] { with_pool(n, [&](covenant::ThreadPool* pool) { c->compress(qp, sp, ip, pool); }); },
                  [](Napi::Env e, const std::vector<Napi::ObjectReference>& k) -> Napi::Value {
                    return codes_and_scales(e, k[1].Value(), k[2].Value());
                  });
}

// residual() -> zero-copy Float32Array over the residual (kept alive by the view).
Napi::Value CompressorWrap::Residual(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto* hold = new std::shared_ptr<float>(c_->residual_shared());
  const size_t n = c_->size();
  Napi::ArrayBuffer ab = Napi::ArrayBuffer::New(
      env, hold->get(), n * sizeof(float), [](Napi::Env, void*, std::shared_ptr<float>* h) { delete h; }, hold);
  return Napi::Float32Array::New(env, n, ab, 0);
}

// loadResidual(r: Float32Array): copies in (synchronous: a validation scan and a memcpy).
Napi::Value CompressorWrap::LoadResidual(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  idle(env, "loadResidual()");
  Napi::Float32Array r = f32_arg(info, 0, "residual");
  if (r.ElementLength() != c_->size())
    range_error(env, "Expected residual to hold n = " + std::to_string(c_->size()) + " values but it holds " +
                         std::to_string(r.ElementLength()));
  try {
    c_->load_residual(r.Data());
  } catch (const covenant::NonFiniteError& e) {
    range_error(env, nonfinite_residual_message(e));
  }
  return env.Undefined();
}

Napi::Value CompressorWrap::Reset(const Napi::CallbackInfo& info) {
  idle(info.Env(), "reset()");
  c_->reset();
  return info.Env().Undefined();
}

}  // namespace covenant_addon
