// Binding of covenant::ring_allreduce. The JS tensor stays referenced until the collective settles; the
// collective works on a copy and writes the mean back only on success (from its own thread, before the
// promise resolves).
#include "comm_wrap.h"

#include <cmath>
#include <cstring>
#include <memory>
#include <condition_variable>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#include "covenant/comm.h"
#include "arg_errors.h"

namespace covenant_addon {

namespace {

// Collectives in flight per environment (the main thread's and each worker thread's). A collective's
// thread must be done with its thread-safe function before its environment is torn down.
struct EnvCollectives {
  std::set<std::shared_ptr<covenant::AbortToken>> tokens;
  int threads = 0;
};
std::mutex g_mu;
std::condition_variable g_idle;
std::map<napi_env, EnvCollectives>* g_running = new std::map<napi_env, EnvCollectives>();


double number_field(Napi::Object o, const char* key, double lo, double hi) {
  Napi::Value v = o.Get(key);
  if (!v.IsNumber()) type_error(o.Env(), std::string("Expected a number for ") + key);
  double d = v.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d) || d != std::floor(d) || d < lo || d > hi)
    range_error(o.Env(), std::string("Expected an integer in [") + std::to_string((long long)lo) + ", " + std::to_string((long long)hi) + "] for " + key);
  return d;
}

covenant::PeerAddress address(Napi::Value v, const std::string& name) {
  if (!v.IsObject()) type_error(v.Env(), "Expected {host, port} for " + name);
  Napi::Object o = v.As<Napi::Object>();
  if (!o.Get("host").IsString()) type_error(v.Env(), "Expected a string for " + name + ".host");
  covenant::PeerAddress a;
  a.host = o.Get("host").As<Napi::String>().Utf8Value();
  a.port = int(number_field(o, "port", 0, 65535));
  return a;
}

struct Outcome {
  bool ok = false;
  covenant::AllReduceStats stats;
  std::string message, code, phase;
  int peer = -1;
};

struct Job {
  covenant::AllReduceOptions opt;
  float* data = nullptr;
  size_t n = 0;
  std::shared_ptr<covenant::AbortToken> token = std::make_shared<covenant::AbortToken>();
  Napi::ObjectReference tensor;
  Napi::Promise::Deferred deferred;
  Napi::ThreadSafeFunction tsfn;
  Outcome outcome;
  napi_env env;
  explicit Job(Napi::Env e) : deferred(Napi::Promise::Deferred::New(e)), env(e) {}
};

template <class T, class Array>
Array typed_copy(Napi::Env env, const std::vector<T>& v) {
  Napi::ArrayBuffer ab = Napi::ArrayBuffer::New(env, v.size() * sizeof(T));
  if (!v.empty()) std::memcpy(ab.Data(), v.data(), v.size() * sizeof(T));
  return Array::New(env, v.size(), ab, 0);
}

// The leaves of both Merkle transcripts and, in int8 mode, the bytes a member may be asked to open.
Napi::Object transcript_object(Napi::Env env, const covenant::AllReduceStats& st) {
  Napi::Object t = Napi::Object::New(env);
  t.Set("sentLeaves", Napi::Buffer<uint8_t>::Copy(env, st.sent_leaves.data(), st.sent_leaves.size()));
  t.Set("receivedLeaves", Napi::Buffer<uint8_t>::Copy(env, st.received_leaves.data(), st.received_leaves.size()));
  if (!st.final_scales.empty() || !st.final_codes.empty()) {
    t.Set("scatterCodes", typed_copy<int8_t, Napi::Int8Array>(env, st.scatter_codes));
    t.Set("scatterScales", typed_copy<float, Napi::Float32Array>(env, st.scatter_scales));
    t.Set("finalCodes", typed_copy<int8_t, Napi::Int8Array>(env, st.final_codes));
    t.Set("finalScales", typed_copy<float, Napi::Float32Array>(env, st.final_scales));
  }
  return t;
}

void settle(Napi::Env env, Napi::Function, Job* job) {
  {
    std::lock_guard<std::mutex> lock(g_mu);
    (*g_running)[job->env].tokens.erase(job->token);
  }
  // Called without an environment while Node tears down: the JS references can no longer be released,
  // so the job is left to the exiting process.
  if (env == nullptr) return;
  std::unique_ptr<Job> owned(job);
  if (job->outcome.ok) {
    Napi::Object r = Napi::Object::New(env);
    r.Set("seconds", job->outcome.stats.seconds);
    r.Set("bytesSent", double(job->outcome.stats.bytes_sent));
    r.Set("bytesReceived", double(job->outcome.stats.bytes_received));
    r.Set("sentSha256", job->outcome.stats.sent_sha256);
    r.Set("receivedSha256", job->outcome.stats.received_sha256);
    if (job->opt.transcripts) r.Set("transcript", transcript_object(env, job->outcome.stats));
    job->deferred.Resolve(r);
  } else {
    Napi::Error e = Napi::Error::New(env, job->outcome.message);
    e.Set("code", Napi::String::New(env, job->outcome.code));
    e.Set("phase", Napi::String::New(env, job->outcome.phase));
    e.Set("peerRank", Napi::Number::New(env, job->outcome.peer));
    job->deferred.Reject(e.Value());
  }
  job->tensor.Reset();
}

}  // namespace

void AbortAllCollectives(napi_env env) {
  std::unique_lock<std::mutex> lock(g_mu);
  EnvCollectives& mine = (*g_running)[env];
  for (const auto& t : mine.tokens) t->abort();
  // An aborted collective ends within milliseconds; wait for its thread so that it never calls into a
  // torn-down environment.
  g_idle.wait_for(lock, std::chrono::seconds(30), [&] { return mine.threads == 0; });
  g_running->erase(env);
}

Napi::Value AllReduceStart(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
    type_error(env, "Expected a Float32Array for tensor");
  if (!info[1].IsObject()) type_error(env, "Expected an object for options");
  Napi::Float32Array tensor = info[0].As<Napi::Float32Array>();
  Napi::Object o = info[1].As<Napi::Object>();
  auto job = std::make_unique<Job>(env);
  covenant::AllReduceOptions& opt = job->opt;
  if (!o.Get("peers").IsArray()) type_error(env, "Expected an array for peers");
  Napi::Array peers = o.Get("peers").As<Napi::Array>();
  for (uint32_t i = 0; i < peers.Length(); ++i) opt.peers.push_back(address(peers.Get(i), "peers[" + std::to_string(i) + "]"));
  opt.rank = int(number_field(o, "rank", 0, 1e6));
  if (o.Has("listen") && !o.Get("listen").IsUndefined()) opt.listen = address(o.Get("listen"), "listen");
  std::string mode = o.Get("mode").IsString() ? o.Get("mode").As<Napi::String>().Utf8Value() : "fp32";
  if (mode != "fp32" && mode != "int8") range_error(env, "Expected 'fp32' or 'int8' for mode but received " + mode);
  opt.mode = mode == "int8" ? covenant::ReduceMode::Int8 : covenant::ReduceMode::Fp32;
  opt.block_size = int(number_field(o, "blockSize", 1, 1 << 24));
  opt.timeout_ms = int(number_field(o, "timeoutMs", 1, 86400000));
  opt.id.round = uint64_t(number_field(o, "round", 0, 9007199254740991.0));
  opt.id.attempt = uint32_t(number_field(o, "attempt", 0, 4294967295.0));
  opt.slice_bytes = size_t(number_field(o, "sliceBytes", 64, 64 << 20));
  opt.transcripts = o.Get("transcripts").IsBoolean() && o.Get("transcripts").As<Napi::Boolean>().Value();
  Napi::Value secret = o.Get("secret");
  if (secret.IsBuffer()) {
    Napi::Buffer<uint8_t> b = secret.As<Napi::Buffer<uint8_t>>();
    opt.secret.assign(reinterpret_cast<const char*>(b.Data()), b.Length());
  } else if (secret.IsString()) {
    opt.secret = secret.As<Napi::String>().Utf8Value();
  } else {
    type_error(env, "Expected a string or Buffer for secret");
  }
  job->data = tensor.Data();
  job->n = tensor.ElementLength();
  job->tensor = Napi::Persistent(tensor.As<Napi::Object>());
  job->tsfn = Napi::ThreadSafeFunction::New(env, Napi::Function(), "covenant.allReduce", 0, 1);

  Napi::Object handle = Napi::Object::New(env);
  handle.Set("promise", job->deferred.Promise());
  std::weak_ptr<covenant::AbortToken> weak = job->token;
  handle.Set("abort", Napi::Function::New(env, [weak](const Napi::CallbackInfo& i) {
               if (auto t = weak.lock()) t->abort();
               return i.Env().Undefined();
             }));
  {
    std::lock_guard<std::mutex> lock(g_mu);
    EnvCollectives& mine = (*g_running)[napi_env(env)];
    mine.tokens.insert(job->token);
    ++mine.threads;
  }
  Job* raw = job.release();
  std::thread([raw] {
    try {
      raw->outcome.stats = covenant::ring_allreduce(raw->data, raw->n, raw->opt, raw->token.get());
      raw->outcome.ok = true;
    } catch (const covenant::CommError& e) {
      raw->outcome.message = e.what();
      raw->outcome.code = e.code;
      raw->outcome.phase = e.phase;
      raw->outcome.peer = e.peer_rank;
    } catch (const std::exception& e) {
      raw->outcome.message = e.what();
      raw->outcome.code = "COMM_IO";
      raw->outcome.phase = "setup";
    }
    // The handle is copied first: settle() may delete the job before this thread releases it. While Node
    // tears the environment down the call is refused (napi_closing) and the job is left to the exit.
    Napi::ThreadSafeFunction tsfn = raw->tsfn;
    napi_env owner = raw->env;
    tsfn.BlockingCall(raw, settle);
    tsfn.Release();
    std::lock_guard<std::mutex> lock(g_mu);
    --(*g_running)[owner].threads;
    g_idle.notify_all();
  }).detach();
  return handle;
}

}  // namespace covenant_addon
