// What the native bench executables share: JSON rows on stdout (one object per line), the usage-error exit
// (status 2, the message on stderr), and `--key value` / bare `--flag` options after the subcommand.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace covenant {
namespace bench {

// The executable's name, the prefix of usage errors.
inline std::string& program_name() {
  static std::string name = "covenant_native_bench";
  return name;
}

inline std::string json_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if ((unsigned char)c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", (unsigned char)c);
      out += buf;
    } else {
      out += c;
    }
  }
  return out;
}

class Row {
 public:
  Row& str(const char* key, const std::string& v) { return raw(key, "\"" + json_escape(v) + "\""); }
  Row& num(const char* key, double v) {
    if (!std::isfinite(v)) return raw(key, "null");
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.6g", v);
    return raw(key, buf);
  }
  Row& integer(const char* key, long long v) { return raw(key, std::to_string(v)); }
  Row& boolean(const char* key, bool v) { return raw(key, v ? "true" : "false"); }
  void print() const {
    std::printf("{%s}\n", body_.c_str());
    std::fflush(stdout);
  }

 private:
  Row& raw(const char* key, const std::string& v) {
    if (!body_.empty()) body_ += ",";
    body_ += "\"" + json_escape(key) + "\":" + v;
    return *this;
  }
  std::string body_;
};

[[noreturn]] inline void fail(const std::string& msg) {
  std::fprintf(stderr, "%s: %s\n", program_name().c_str(), msg.c_str());
  std::exit(2);
}

struct Args {
  std::vector<std::pair<std::string, std::string>> kv;
  std::vector<std::string> flags;

  bool flag(const std::string& f) const { return std::find(flags.begin(), flags.end(), f) != flags.end(); }
  const std::string* get(const std::string& k) const {
    for (auto& p : kv)
      if (p.first == k) return &p.second;
    return nullptr;
  }
  long integer(const std::string& k, long dflt, long lo, long hi) const {
    const std::string* v = get(k);
    if (!v) return dflt;
    char* end = nullptr;
    long x = std::strtol(v->c_str(), &end, 10);
    if (v->empty() || *end || x < lo || x > hi)
      fail("expected an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "] for --" + k +
           " but received \"" + *v + "\"");
    return x;
  }
  double real(const std::string& k, double dflt, double lo, double hi) const {
    const std::string* v = get(k);
    if (!v) return dflt;
    char* end = nullptr;
    double x = std::strtod(v->c_str(), &end);
    if (v->empty() || *end || !(x >= lo && x <= hi))
      fail("expected a number in [" + std::to_string(lo) + ", " + std::to_string(hi) + "] for --" + k +
           " but received \"" + *v + "\"");
    return x;
  }
  std::vector<int> int_list(const std::string& k, std::vector<int> dflt, int lo, int hi) const {
    const std::string* v = get(k);
    if (!v) return dflt;
    std::vector<int> out;
    std::stringstream ss(*v);
    std::string item;
    while (std::getline(ss, item, ',')) {
      char* end = nullptr;
      long x = std::strtol(item.c_str(), &end, 10);
      if (item.empty() || *end || x < lo || x > hi)
        fail("expected a comma-separated list of integers in [" + std::to_string(lo) + ", " + std::to_string(hi) +
             "] for --" + k + " but received \"" + *v + "\"");
      out.push_back((int)x);
    }
    if (out.empty()) fail("--" + k + " is empty");
    return out;
  }
};

inline Args parse_args(int argc, char** argv, int first, const std::vector<std::string>& valued,
                const std::vector<std::string>& bare) {
  Args a;
  for (int i = first; i < argc; ++i) {
    std::string s = argv[i];
    if (s.rfind("--", 0) != 0) fail("unexpected argument \"" + s + "\" (options start with --)");
    std::string k = s.substr(2);
    if (std::find(bare.begin(), bare.end(), k) != bare.end()) {
      a.flags.push_back(k);
    } else if (std::find(valued.begin(), valued.end(), k) != valued.end()) {
      if (i + 1 >= argc) fail("--" + k + " needs a value");
      a.kv.emplace_back(k, argv[++i]);
    } else {
      std::string known;
      for (auto& v : valued) known += " --" + v + " N";
      for (auto& b : bare) known += " --" + b;
      fail("unknown option --" + k + " (known:" + (known.empty() ? " none" : known) + ")");
    }
  }
  return a;
}

}  // namespace bench
}  // namespace covenant
