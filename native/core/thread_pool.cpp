// Fixed worker pool: one generation counter wakes all workers; task t always runs on thread t % n.
#include "covenant/thread_pool.h"

#include <algorithm>

namespace covenant {

namespace {
thread_local bool t_inside_pool = false;
}

int ThreadPool::hardware_threads() {
  unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n);
}

ThreadPool::ThreadPool(int nthreads) : nthreads_(nthreads <= 0 ? hardware_threads() : nthreads) {
  for (int i = 1; i < nthreads_; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_work_.notify_all();
  for (auto& w : workers_) w.join();
}

void ThreadPool::worker_loop(int id) {
  t_inside_pool = true;
  uint64_t seen = 0;
  for (;;) {
    const std::function<void(int)>* job;
    int ntasks;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_work_.wait(lock, [&] { return stop_ || generation_ != seen; });
      if (stop_) return;
      seen = generation_;
      job = job_;
      ntasks = ntasks_;
    }
    for (int t = id; t < ntasks; t += nthreads_) (*job)(t);
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (--pending_ == 0) cv_done_.notify_one();
    }
  }
}

void ThreadPool::run(int ntasks, const std::function<void(int)>& fn) {
  if (ntasks <= 0) return;
  if (nthreads_ == 1 || ntasks == 1 || t_inside_pool) {
    for (int t = 0; t < ntasks; ++t) fn(t);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    job_ = &fn;
    ntasks_ = ntasks;
    pending_ = nthreads_ - 1;
    ++generation_;
  }
  cv_work_.notify_all();
  t_inside_pool = true;
  for (int t = 0; t < ntasks; t += nthreads_) fn(t);
  t_inside_pool = false;
  std::unique_lock<std::mutex> lock(mu_);
  cv_done_.wait(lock, [&] { return pending_ == 0; });
  job_ = nullptr;
}

void ThreadPool::parallel_for(int64_t n, const std::function<void(int64_t, int64_t, int)>& fn, int64_t grain) {
  if (n <= 0) return;
  if (grain < 1) grain = 1;
  int64_t units = (n + grain - 1) / grain;
  int chunks = static_cast<int>(std::min<int64_t>(units, nthreads_));
  int64_t per = (units + chunks - 1) / chunks;
  run(chunks, [&](int c) {
    int64_t b = std::min(n, c * per * grain);
    int64_t e = std::min(n, (c + 1) * per * grain);
    if (b < e) fn(b, e, c);
  });
}

}  // namespace covenant
