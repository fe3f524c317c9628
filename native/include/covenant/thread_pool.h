// A fixed pool of worker threads shared by every kernel (and by BLAS calls) of one engine, so that the
// process never runs more compute threads than it was given. Work is split statically, which keeps
// results independent of thread timing (determinism for a fixed thread count).
#pragma once
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace covenant {

class ThreadPool {
 public:
  // nthreads <= 0 means one per hardware thread. The calling thread is worker 0.
  explicit ThreadPool(int nthreads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return nthreads_; }

  // Runs fn(task) for task in [0, ntasks); task t runs on thread t % size(). Blocks until all are done.
  // Called from inside a task, it runs the tasks serially on the calling thread.
  void run(int ntasks, const std::function<void(int task)>& fn);

  // Splits [0, n) into size() contiguous chunks (each a multiple of `grain` except the last) and runs
  // fn(begin, end, chunk_index) on them.
  void parallel_for(int64_t n, const std::function<void(int64_t begin, int64_t end, int chunk)>& fn,
                    int64_t grain = 1);

  static int hardware_threads();

 private:
  void worker_loop(int id);

  int nthreads_;
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable cv_work_, cv_done_;
  const std::function<void(int)>* job_ = nullptr;
  int ntasks_ = 0;
  uint64_t generation_ = 0;
  int pending_ = 0;
  bool stop_ = false;
};

}  // namespace covenant
