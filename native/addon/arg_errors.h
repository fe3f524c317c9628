// The JS errors every binding throws for bad arguments: TypeError for a wrong type, RangeError for a value
// out of range; the message names the argument.
#pragma once
#include <napi.h>

#include <string>

namespace covenant_addon {

[[noreturn]] inline void type_error(Napi::Env env, const std::string& msg) { throw Napi::TypeError::New(env, msg); }
[[noreturn]] inline void range_error(Napi::Env env, const std::string& msg) { throw Napi::RangeError::New(env, msg); }

}  // namespace covenant_addon
