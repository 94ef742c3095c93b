// keel_nft's socket relay: once the proxy has allowed a connection and dialed upstream,
// it hands both sockets here, and a thread of its own moves the bytes with splice(2)
// until both directions are done. No byte crosses into JavaScript and none is copied
// through user space: splice moves page references from one socket's receive queue
// through a pipe into the other socket. The JS event loop is left with accept, peek,
// decide and dial.
//
// Semantics are those of the JS splice (packages/proxy/src/splice.ts), which stays as
// the fallback:
// - Each direction first writes its head (bytes JS already read), then splices.
// - Backpressure: a direction reads from its source only when its pipe is empty, so at
//   most one pipe's worth (kPipeBytes) is in flight per direction.
// - Half-close: end of stream on one socket becomes shutdown(SHUT_WR) on the other.
// - Any error (reset, EPIPE, a socket error, the idle timeout, an abort) closes both
//   sockets at once, and the first error is reported.
// - When both directions have ended, both sockets are closed and the byte counts are
//   reported through one callback on the JS thread.
//
// Ownership: relayStart dup()s the two descriptors before it returns, so the caller
// closes its own copies (destroys the Node sockets) right after. One epoll thread per
// Node environment serves every relay; it is started with the first relay and stopped
// when the environment is torn down. Edge-triggered epoll: a direction waits for an
// event only after a syscall said EAGAIN, and a direction that used up its byte budget
// for one turn goes on a ready list instead, so one busy connection cannot starve
// the others.

#include "relay.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

namespace keel_relay {
namespace {

// A pipe's capacity (F_SETPIPE_SZ): bytes moved per splice pair. 256 KiB is what the JS
// path reads at once (bulk-read.ts); the kernel default (64 KiB) costs 4x the syscalls.
constexpr int kPipeBytes = 256 * 1024;
// Bytes one direction may move per turn before the other relays get theirs.
constexpr size_t kTurnBudget = 1024 * 1024;
// Empty pipes kept for reuse, so a new connection or a quiet one costs no pipe2().
constexpr size_t kPipePoolMax = 64;
// How often idle timeouts are checked, at most.
constexpr int64_t kIdleScanMs = 250;

int64_t NowMs() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

struct Pipe {
  int r = -1;
  int w = -1;
  bool open() const { return r >= 0; }
};

struct Direction {
  int src = -1;
  int dst = -1;
  Pipe pipe;                // held only while bytes are in it
  size_t in_pipe = 0;       // bytes in the pipe, not yet written to dst
  std::string head;         // written to dst before anything read from src
  size_t head_written = 0;
  uint64_t bytes = 0;       // bytes written to dst, head included
  bool eof = false;         // src said end of stream
  bool shut = false;        // dst's write side has been shut down after eof
};

struct Relay {
  uint64_t id = 0;
  int agent = -1;
  int upstream = -1;
  Direction out;  // agent -> upstream
  Direction in;   // upstream -> agent
  int64_t idle_ms = 0;
  int64_t last_active_ms = 0;
  bool queued = false;  // on the ready list
};

// What the JS callback gets when a relay is over.
struct Outcome {
  uint64_t id;
  uint64_t bytes_out;
  uint64_t bytes_in;
  int err;              // 0: both directions ended cleanly
  const char* syscall;  // what failed, when err != 0
};

struct Command {
  enum Kind { kStart, kAbort } kind;
  Relay* relay;  // kStart: ownership passes to the thread
  uint64_t id;   // kAbort
};

enum class Step { kWait, kBudget, kError };

class Engine;
void DeliverOutcome(Napi::Env env, Napi::Function fn, Engine* engine, Outcome* outcome);
using Callback = Napi::TypedThreadSafeFunction<Engine, Outcome, DeliverOutcome>;

class Engine {
 public:
  explicit Engine(int epoll_fd, int wake_fd) : epoll_fd_(epoll_fd), wake_fd_(wake_fd) {}

  ~Engine() {
    Stop();
    if (epoll_fd_ >= 0) close(epoll_fd_);
    if (wake_fd_ >= 0) close(wake_fd_);
  }

  Callback callback;

  // JS thread. Returns the relay id, or 0 with errno/syscall set (nothing was taken).
  uint64_t Start(Napi::Env env, int agent_fd, int upstream_fd, std::string head_out, std::string head_in,
                 int64_t idle_ms, int& err, const char*& syscall) {
    int agent = fcntl(agent_fd, F_DUPFD_CLOEXEC, 0);
    if (agent < 0) {
      err = errno;
      syscall = "dup";
      return 0;
    }
    int upstream = fcntl(upstream_fd, F_DUPFD_CLOEXEC, 0);
    if (upstream < 0) {
      err = errno;
      syscall = "dup";
      close(agent);
      return 0;
    }
    if (!EnsureThread(err, syscall)) {
      close(agent);
      close(upstream);
      return 0;
    }
    auto* r = new Relay();
    r->id = next_id_++;
    r->agent = agent;
    r->upstream = upstream;
    r->out.src = agent;
    r->out.dst = upstream;
    r->out.head = std::move(head_out);
    r->in.src = upstream;
    r->in.dst = agent;
    r->in.head = std::move(head_in);
    r->idle_ms = idle_ms;
    r->last_active_ms = NowMs();
    if (js_active_++ == 0) callback.Ref(env);
    active_.fetch_add(1, std::memory_order_relaxed);
    Post({Command::kStart, r, r->id});
    return r->id;
  }

  // JS thread. An unknown or finished id is ignored.
  void Abort(uint64_t id) { Post({Command::kAbort, nullptr, id}); }

  // JS thread, from DeliverOutcome.
  void Settled(Napi::Env env) {
    if (js_active_ > 0 && --js_active_ == 0) callback.Unref(env);
  }

  size_t Active() const { return active_.load(std::memory_order_relaxed); }
  size_t PooledPipes() const { return pooled_.load(std::memory_order_relaxed); }

  // Any thread but the relay thread: ask the thread to close everything and wait for it.
  void Stop() {
    if (!thread_.joinable()) return;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      quit_ = true;
    }
    Wake();
    thread_.join();
  }

 private:
  int epoll_fd_;
  int wake_fd_;
  std::thread thread_;
  std::mutex mutex_;
  std::vector<Command> commands_;  // guarded by mutex_
  bool quit_ = false;              // guarded by mutex_
  uint64_t next_id_ = 1;           // JS thread; 0 is the wake-up tag in epoll
  size_t js_active_ = 0;           // JS thread: relays whose outcome JS has not seen yet
  std::atomic<size_t> active_{0};
  std::atomic<size_t> pooled_{0};

  // Relay thread only.
  std::unordered_map<uint64_t, Relay*> relays_;
  std::vector<uint64_t> ready_;
  std::vector<Pipe> pool_;
  size_t idle_relays_ = 0;
  int64_t next_idle_scan_ms_ = 0;

  bool EnsureThread(int& err, const char*& syscall) {
    if (thread_.joinable()) return true;
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = 0;
    if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, wake_fd_, &ev) != 0 && errno != EEXIST) {
      err = errno;
      syscall = "epoll_ctl";
      return false;
    }
    // Signals stay with the JS thread (keel run forwards them to the agent): the relay
    // thread starts with all of them blocked.
    sigset_t all;
    sigset_t previous;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &previous);
    try {
      thread_ = std::thread([this] { Loop(); });
    } catch (const std::exception&) {
      err = EAGAIN;
      syscall = "pthread_create";
    }
    pthread_sigmask(SIG_SETMASK, &previous, nullptr);
    return thread_.joinable();
  }

  void Post(Command c) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      commands_.push_back(c);
    }
    Wake();
  }

  void Wake() {
    uint64_t one = 1;
    // EAGAIN means the counter is already non-zero: the thread will wake anyway.
    while (write(wake_fd_, &one, sizeof one) < 0 && errno == EINTR) {
    }
  }

  void Loop() {
    std::vector<epoll_event> events(256);
    std::vector<uint64_t> turn;
    for (;;) {
      int timeout = -1;
      if (!ready_.empty()) {
        timeout = 0;
      } else if (idle_relays_ > 0) {
        timeout = static_cast<int>(std::max<int64_t>(0, next_idle_scan_ms_ - NowMs()));
      }
      int n = epoll_wait(epoll_fd_, events.data(), static_cast<int>(events.size()), timeout);
      if (n < 0) {
        if (errno == EINTR) continue;
        // Cannot wait any more: end every relay rather than leave them hanging.
        int err = errno;
        CloseAll(err, "epoll_wait");
        return;
      }
      for (int i = 0; i < n; i++) {
        uint64_t tag = events[i].data.u64;
        if (tag == 0) {
          uint64_t count;
          while (read(wake_fd_, &count, sizeof count) < 0 && errno == EINTR) {
          }
          if (!RunCommands()) return;
          continue;
        }
        auto it = relays_.find(tag >> 1);
        if (it == relays_.end()) continue;  // finished earlier in this batch
        Relay* r = it->second;
        if ((events[i].events & EPOLLERR) != 0) {
          int so_error = 0;
          socklen_t len = sizeof so_error;
          int fd = (tag & 1) == 0 ? r->agent : r->upstream;
          if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &so_error, &len) == 0 && so_error != 0) {
            Finish(r, so_error, "socket");
            continue;
          }
        }
        Queue(r);
      }
      turn.swap(ready_);
      for (uint64_t id : turn) {
        auto it = relays_.find(id);
        if (it == relays_.end()) continue;
        it->second->queued = false;
        Progress(it->second);
      }
      turn.clear();
      if (idle_relays_ > 0 && NowMs() >= next_idle_scan_ms_) ScanIdle();
    }
  }

  // Returns false when the thread must exit.
  bool RunCommands() {
    std::vector<Command> commands;
    bool quit;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      commands.swap(commands_);
      quit = quit_;
    }
    for (const Command& c : commands) {
      if (c.kind == Command::kStart) {
        Add(c.relay);
      } else {
        auto it = relays_.find(c.id);
        if (it != relays_.end()) Finish(it->second, ECANCELED, "abort");
      }
    }
    if (quit) {
      CloseAll(ECANCELED, "shutdown");
      for (Pipe& p : pool_) ClosePipe(p);
      pool_.clear();
      pooled_.store(0, std::memory_order_relaxed);
      return false;
    }
    return true;
  }

  void Add(Relay* r) {
    relays_.emplace(r->id, r);
    if (r->idle_ms > 0 && idle_relays_++ == 0) next_idle_scan_ms_ = NowMs() + ScanInterval(r->idle_ms);
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
    ev.data.u64 = r->id << 1;
    if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, r->agent, &ev) != 0) {
      Finish(r, errno, "epoll_ctl");
      return;
    }
    ev.data.u64 = (r->id << 1) | 1;
    if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, r->upstream, &ev) != 0) {
      Finish(r, errno, "epoll_ctl");
      return;
    }
    Queue(r);  // write the heads, and read whatever is already waiting
  }

  static int64_t ScanInterval(int64_t idle_ms) { return std::min(kIdleScanMs, std::max<int64_t>(1, idle_ms / 4)); }

  void Queue(Relay* r) {
    if (r->queued) return;
    r->queued = true;
    ready_.push_back(r->id);
  }

  void Progress(Relay* r) {
    int err = 0;
    const char* syscall = nullptr;
    Step out = Pump(r, r->out, err, syscall);
    Step in = out == Step::kError ? Step::kWait : Pump(r, r->in, err, syscall);
    if (out == Step::kError || in == Step::kError) {
      Finish(r, err, syscall);
    } else if (r->out.shut && r->in.shut) {
      Finish(r, 0, nullptr);
    } else if (out == Step::kBudget || in == Step::kBudget) {
      Queue(r);
    }
  }

  Step Pump(Relay* r, Direction& d, int& err, const char*& syscall) {
    while (d.head_written < d.head.size()) {
      ssize_t n = send(d.dst, d.head.data() + d.head_written, d.head.size() - d.head_written, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN) return Step::kWait;
        err = errno;
        syscall = "send";
        return Step::kError;
      }
      d.head_written += static_cast<size_t>(n);
      d.bytes += static_cast<uint64_t>(n);
      r->last_active_ms = NowMs();
    }
    if (!d.head.empty()) {
      std::string().swap(d.head);
      d.head_written = 0;
    }
    size_t moved = 0;
    while (moved < kTurnBudget) {
      if (d.in_pipe > 0) {
        ssize_t n = splice(d.pipe.r, nullptr, d.dst, nullptr, d.in_pipe, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
        if (n < 0) {
          if (errno == EINTR) continue;
          if (errno == EAGAIN) return Step::kWait;  // dst is full: its EPOLLOUT resumes us
          err = errno;
          syscall = "splice";
          return Step::kError;
        }
        d.in_pipe -= static_cast<size_t>(n);
        d.bytes += static_cast<uint64_t>(n);
        moved += static_cast<size_t>(n);
        if (d.in_pipe == 0) ReleasePipe(d.pipe);
        continue;
      }
      if (d.eof) {
        if (!d.shut) {
          d.shut = true;
          // A failure here (the peer is gone) shows up as an error on the next event.
          shutdown(d.dst, SHUT_WR);
        }
        return Step::kWait;
      }
      if (!AcquirePipe(d.pipe, err)) {
        syscall = "pipe2";
        return Step::kError;
      }
      ssize_t n = splice(d.src, nullptr, d.pipe.w, nullptr, kPipeBytes, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN) {
          ReleasePipe(d.pipe);
          return Step::kWait;  // nothing to read: src's EPOLLIN resumes us
        }
        err = errno;
        syscall = "splice";
        return Step::kError;
      }
      if (n == 0) {
        d.eof = true;
        ReleasePipe(d.pipe);
        continue;
      }
      d.in_pipe = static_cast<size_t>(n);
    }
    if (moved > 0) r->last_active_ms = NowMs();
    return Step::kBudget;
  }

  bool AcquirePipe(Pipe& p, int& err) {
    if (p.open()) return true;
    if (!pool_.empty()) {
      p = pool_.back();
      pool_.pop_back();
      pooled_.store(pool_.size(), std::memory_order_relaxed);
      return true;
    }
    int fds[2];
    if (pipe2(fds, O_CLOEXEC | O_NONBLOCK) != 0) {
      err = errno;
      return false;
    }
    // Best effort: a smaller pipe only means more syscalls.
    fcntl(fds[1], F_SETPIPE_SZ, kPipeBytes);
    p.r = fds[0];
    p.w = fds[1];
    return true;
  }

  // For an empty pipe only: back to the pool.
  void ReleasePipe(Pipe& p) {
    if (!p.open()) return;
    if (pool_.size() < kPipePoolMax) {
      pool_.push_back(p);
      pooled_.store(pool_.size(), std::memory_order_relaxed);
    } else {
      ClosePipe(p);
    }
    p = Pipe{};
  }

  static void ClosePipe(Pipe& p) {
    if (p.r >= 0) close(p.r);
    if (p.w >= 0) close(p.w);
    p = Pipe{};
  }

  // Close both sockets (which also takes them out of epoll), report, forget the relay.
  void Finish(Relay* r, int err, const char* syscall) {
    close(r->agent);
    close(r->upstream);
    for (Direction* d : {&r->out, &r->in}) {
      if (d->in_pipe == 0) ReleasePipe(d->pipe);
      else ClosePipe(d->pipe);  // bytes that can no longer go anywhere
    }
    if (r->idle_ms > 0) idle_relays_--;
    relays_.erase(r->id);
    auto* outcome = new Outcome{r->id, r->out.bytes, r->in.bytes, err, syscall};
    delete r;
    active_.fetch_sub(1, std::memory_order_relaxed);
    // Unbounded queue: only napi_closing (the environment is going away) can fail.
    if (callback.NonBlockingCall(outcome) != napi_ok) delete outcome;
  }

  void CloseAll(int err, const char* syscall) {
    std::vector<Relay*> all;
    all.reserve(relays_.size());
    for (auto& [id, r] : relays_) all.push_back(r);
    for (Relay* r : all) Finish(r, err, syscall);
    ready_.clear();
  }

  void ScanIdle() {
    int64_t now = NowMs();
    int64_t interval = kIdleScanMs;
    std::vector<Relay*> expired;
    for (auto& [id, r] : relays_) {
      if (r->idle_ms <= 0) continue;
      if (now - r->last_active_ms >= r->idle_ms) expired.push_back(r);
      interval = std::min(interval, ScanInterval(r->idle_ms));
    }
    for (Relay* r : expired) Finish(r, ETIMEDOUT, "idle");
    next_idle_scan_ms_ = now + interval;
  }
};

void DeliverOutcome(Napi::Env env, Napi::Function fn, Engine* engine, Outcome* outcome) {
  if (env != nullptr && !fn.IsEmpty()) {
    engine->Settled(env);
    Napi::Value syscall = outcome->syscall == nullptr ? env.Undefined() : Napi::String::New(env, outcome->syscall);
    fn.Call({Napi::Number::New(env, static_cast<double>(outcome->id)), Napi::Number::New(env, static_cast<double>(outcome->bytes_out)),
             Napi::Number::New(env, static_cast<double>(outcome->bytes_in)), Napi::Number::New(env, outcome->err), syscall});
  }
  delete outcome;
}

Engine* EngineOf(const Napi::CallbackInfo& info, const char* usage) {
  if (info.Length() < 1 || !info[0].IsExternal()) throw Napi::TypeError::New(info.Env(), usage);
  return info[0].As<Napi::External<Engine>>().Data();
}

// relayInit(onOutcome(id, bytesOut, bytesIn, errno, syscall?)) -> engine (an External).
// Call once per environment. The thread starts with the first relay.
Napi::Value RelayInit(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsFunction()) {
    throw Napi::TypeError::New(env, "relayInit(onOutcome: (id, bytesOut, bytesIn, errno, syscall?) => void)");
  }
  int epoll_fd = epoll_create1(EPOLL_CLOEXEC);
  if (epoll_fd < 0) throw Napi::Error::New(env, std::string("epoll_create1: ") + strerror(errno));
  int wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake_fd < 0) {
    int err = errno;
    close(epoll_fd);
    throw Napi::Error::New(env, std::string("eventfd: ") + strerror(err));
  }
  auto* engine = new Engine(epoll_fd, wake_fd);
  // The engine lives as long as the callback: it is deleted (its thread stopped and
  // joined first) when the environment tears the callback down.
  engine->callback = Callback::New(env, info[0].As<Napi::Function>(), "keel_nft.relay", 0, 1, engine,
                                   [](Napi::Env, void*, Engine* e) { delete e; });
  engine->callback.Unref(env);  // an idle engine does not keep Node alive
  return Napi::External<Engine>::New(env, engine);
}

// relayStart(engine, agentFd, upstreamFd, headOut?, headIn?, idleMs) -> id | {errno, syscall}
Napi::Value RelayStart(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* usage = "relayStart(engine, agentFd: number, upstreamFd: number, headOut?: Buffer, headIn?: Buffer, idleMs: number)";
  Engine* engine = EngineOf(info, usage);
  if (info.Length() < 6 || !info[1].IsNumber() || !info[2].IsNumber() || !info[5].IsNumber()) {
    throw Napi::TypeError::New(env, usage);
  }
  auto fd = [&](const Napi::Value& v) {
    double d = v.As<Napi::Number>().DoubleValue();
    if (!(d >= 0 && d <= 2147483647.0) || d != static_cast<double>(static_cast<int>(d))) {
      throw Napi::TypeError::New(env, "file descriptors must be integers >= 0");
    }
    return static_cast<int>(d);
  };
  auto bytes = [&](const Napi::Value& v) {
    if (v.IsUndefined() || v.IsNull()) return std::string();
    if (!v.IsBuffer()) throw Napi::TypeError::New(env, "heads must be Buffers or undefined");
    auto b = v.As<Napi::Buffer<char>>();
    return std::string(b.Data(), b.Length());
  };
  int agent_fd = fd(info[1]);
  int upstream_fd = fd(info[2]);
  std::string head_out = bytes(info[3]);
  std::string head_in = bytes(info[4]);
  double idle = info[5].As<Napi::Number>().DoubleValue();
  int64_t idle_ms = idle > 0 ? static_cast<int64_t>(idle) : 0;
  int err = 0;
  const char* syscall = "";
  uint64_t id = engine->Start(env, agent_fd, upstream_fd, std::move(head_out), std::move(head_in), idle_ms, err, syscall);
  if (id != 0) return Napi::Number::New(env, static_cast<double>(id));
  Napi::Object obj = Napi::Object::New(env);
  obj.Set("errno", Napi::Number::New(env, err));
  obj.Set("syscall", Napi::String::New(env, syscall));
  return obj;
}

// relayAbort(engine, id): close both sockets now; the outcome reports ECANCELED.
Napi::Value RelayAbort(const Napi::CallbackInfo& info) {
  Engine* engine = EngineOf(info, "relayAbort(engine, id: number)");
  if (info.Length() < 2 || !info[1].IsNumber()) throw Napi::TypeError::New(info.Env(), "relayAbort(engine, id: number)");
  engine->Abort(static_cast<uint64_t>(info[1].As<Napi::Number>().DoubleValue()));
  return info.Env().Undefined();
}

// relayStats(engine) -> {active, pooledPipes}: for tests and diagnostics.
Napi::Value RelayStats(const Napi::CallbackInfo& info) {
  Engine* engine = EngineOf(info, "relayStats(engine)");
  Napi::Object obj = Napi::Object::New(info.Env());
  obj.Set("active", Napi::Number::New(info.Env(), static_cast<double>(engine->Active())));
  obj.Set("pooledPipes", Napi::Number::New(info.Env(), static_cast<double>(engine->PooledPipes())));
  return obj;
}

}  // namespace

void Init(Napi::Env env, Napi::Object exports) {
  exports.Set("relayInit", Napi::Function::New(env, RelayInit, "relayInit"));
  exports.Set("relayStart", Napi::Function::New(env, RelayStart, "relayStart"));
  exports.Set("relayAbort", Napi::Function::New(env, RelayAbort, "relayAbort"));
  exports.Set("relayStats", Napi::Function::New(env, RelayStats, "relayStats"));
}

}  // namespace keel_relay
