// The native test executables' harness: CHECK records a failure and goes on; run_tests runs the named
// tests (those containing argv[1], when given) and ends with the line "N passed, N failed".
#pragma once
#include <cstdio>
#include <cstring>
#include <exception>

namespace covenant_test {

inline int g_failed = 0;
inline int g_checks = 0;

struct Test {
  const char* name;
  void (*fn)();
};

template <size_t N>
int run_tests(const Test (&tests)[N], int argc, char** argv) {
  const char* filter = argc > 1 ? argv[1] : "";
  int passed = 0, failed = 0;
  for (const auto& t : tests) {
    if (!std::strstr(t.name, filter)) continue;
    int before = g_failed;
    try {
      t.fn();
    } catch (const std::exception& e) {
      ++g_failed;
      std::printf("    FAIL: uncaught exception: %s\n", e.what());
    }
    bool ok = g_failed == before;
    std::printf("%s %s\n", ok ? "ok  " : "FAIL", t.name);
    std::fflush(stdout);
    (ok ? passed : failed)++;
  }
  std::printf("%d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}

}  // namespace covenant_test

#define CHECK(cond, ...)                                          \
  do {                                                            \
    ++covenant_test::g_checks;                                    \
    if (!(cond)) {                                                \
      ++covenant_test::g_failed;                                  \
      std::printf("    FAIL %s:%d: ", __FILE__, __LINE__);        \
      std::printf(__VA_ARGS__);                                   \
      std::printf("\n");                                          \
    }                                                             \
  } while (0)
