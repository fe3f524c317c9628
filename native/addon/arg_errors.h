// The JS errors every binding throws for bad arguments: TypeError for a wrong type, RangeError for a value
// out of range; the message names the argument. Also the one wording of a refused non-finite element, shared
// by the Compressor and the engine's compressDelta so that both refuse alike.
#pragma once
#include <napi.h>

#include <cmath>
#include <cstdio>
#include <stdexcept>
#include <string>

#include "covenant/quant.h"

namespace covenant_addon {

[[noreturn]] inline void type_error(Napi::Env env, const std::string& msg) { throw Napi::TypeError::New(env, msg); }
[[noreturn]] inline void range_error(Napi::Env env, const std::string& msg) { throw Napi::RangeError::New(env, msg); }

// Thrown on a worker thread for bad input found there; the job rejects with a JS RangeError of this message.
struct WorkerRangeError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// v as JavaScript writes it (NaN, Infinity, -Infinity, else "%.9g").
inline std::string js_number(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "Infinity" : "-Infinity";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

// "arg[i] = NaN is not finite (...)", or for an overflowing sum with the residual "arg[i] + residual[i]
// overflows fp32 (...)".
inline std::string nonfinite_message(const std::string& arg, const covenant::NonFiniteError& e) {
  const std::string i = std::to_string(e.index());
  if (e.sum_overflow())
    return arg + "[" + i + "] + residual[" + i + "] overflows fp32 (the sum is " + js_number(e.value()) +
           "); the residual was left unchanged";
  return arg + "[" + i + "] = " + js_number(e.value()) + " is not finite (NaN and Infinity cannot be quantized)";
}

// What a refused loadResidual says.
inline std::string nonfinite_residual_message(const covenant::NonFiniteError& e) {
  return "residual[" + std::to_string(e.index()) + "] = " + js_number(e.value()) +
         " is not finite; the residual was left unchanged";
}

}  // namespace covenant_addon
