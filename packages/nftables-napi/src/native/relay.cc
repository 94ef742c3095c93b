// keel_nft's socket relay: once the proxy has allowed a connection, it hands the agent's
// socket here with the vetted upstream addresses, and a thread of its own dials the
// upstream and moves the bytes until both directions are done. No byte crosses into
// JavaScript: the JS event loop is left with accept, peek and decide; the dial, the
// first bytes upstream and every byte after them happen here without a round trip
// through it.
//
// Why recv/send and not splice(2): splice from a loopback TCP socket hands the next
// socket the sender's small page fragments, and the agent then receives many small
// segments. Measured in bench/sandbox (2-core VM, interleaved): splice moved 0.81x
// direct HTTPS throughput and 0.68x HTTP, one copy through a 256 KiB buffer 0.91x and
// 0.81x. The copy costs the relay less than the fragments cost the agent.
//
// Semantics are those of the JS path (packages/proxy/src/dial.ts and splice.ts), which
// stays as the fallback:
// - Dial: the addresses in order, one at a time, each with its own timeout; the first
//   that connects wins. If none does, JS hears why (each address's error) and answers
//   the agent itself: its socket was never touched.
// - Each direction first writes its head (the bytes JS already read), then relays.
// - The agent -> upstream direction reads from the agent only once JS has committed
//   (relayCommit), after it has let go of its own socket: until then Node may still
//   read from it, and two readers would split the stream. Upstream -> agent runs from
//   the connect on, so the upstream's first answer is not held up by that round trip.
// - Backpressure: a direction reads only when everything it read before has been
//   written, so at most one read buffer (kReadBytes) per direction waits in memory.
// - Half-close: end of stream on one socket becomes shutdown(SHUT_WR) on the other.
// - Any error (reset, EPIPE, a socket error, the idle timeout, an abort) closes both
//   sockets at once, and the first error is reported.
//
// Ownership: relayStart dup()s the agent's descriptor; the relay closes its copy when it
// is done, and JS closes its own (destroys its Node socket) when it commits or, after a
// failed dial, when it has answered. One epoll thread per Node environment serves every
// relay; it starts with the first relay and stops when the environment is torn down.
// Edge-triggered epoll: a direction waits for an event only after a syscall said EAGAIN,
// and a direction that used up its byte budget for one turn goes on a ready list
// instead, so one busy connection cannot starve the others.

#include "relay.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
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
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

namespace keel_relay {
namespace {

// Bytes read at once: what the JS path reads at once too (bulk-read.ts).
constexpr size_t kReadBytes = 256 * 1024;
// Read buffers kept for reuse (see TakeBuffer).
constexpr size_t kSpareBuffers = 16;
// Bytes one direction may move per turn before the other relays get theirs.
constexpr size_t kTurnBudget = 1024 * 1024;
// How often idle timeouts are checked, at most.
constexpr int64_t kIdleScanMs = 250;

int64_t NowMs() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

std::string ErrnoName(int err) {
  const char* name = strerrorname_np(err);
  return name != nullptr ? name : "errno " + std::to_string(err);
}

struct Direction {
  int src = -1;
  int dst = -1;
  std::string head;         // from JS: written to dst before anything read from src
  size_t head_written = 0;
  std::unique_ptr<char[]> held;  // a read dst did not take all of: held[held_off, held_len) is left
  size_t held_off = 0;
  size_t held_len = 0;
  uint64_t bytes = 0;       // bytes written to dst, head included
  bool gated = false;       // src is not ours to read yet (see relayCommit)
  bool eof = false;         // src said end of stream
  bool shut = false;        // dst's write side has been shut down after eof
};

struct Address {
  sockaddr_storage addr{};
  socklen_t len = 0;
  std::string ip;    // as given
  std::string text;  // "127.0.0.1:443" / "[::1]:443", for reports
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
  // Dialing: the candidates left, this attempt's deadline, what went wrong so far.
  bool dialing = true;
  std::vector<Address> candidates;
  size_t next_candidate = 0;
  size_t attempt = 0;  // index of the candidate being dialed
  int64_t dial_timeout_ms = 0;
  int64_t dial_deadline_ms = 0;
  std::string failures;
  bool all_timed_out = true;
};

// What JS hears, on its own thread.
struct Outcome {
  enum Kind { kConnected, kDialFailed, kDone };
  Outcome(Kind k, uint64_t relay_id) : kind(k), id(relay_id) {}
  Kind kind;
  uint64_t id;
  uint64_t bytes_out = 0;
  uint64_t bytes_in = 0;
  int err = 0;                  // kDone: the first error (0: both directions ended with a FIN)
  const char* syscall = nullptr;
  std::string text;             // kConnected: the address (IP); kDialFailed: what each attempt got
  bool timed_out = false;       // kDialFailed: every attempt timed out
};

struct Command {
  enum Kind { kStart, kCommit, kAbort } kind;
  Relay* relay = nullptr;  // kStart: ownership passes to the thread
  uint64_t id = 0;
  std::string bytes;       // kCommit: agent bytes Node read after the head
};

// kDone is Drain's "all written"; Pump returns only the other three.
enum class Step { kWait, kBudget, kError, kDone };

class Engine;
void DeliverOutcome(Napi::Env env, Napi::Function fn, Engine* engine, Outcome* outcome);
using Callback = Napi::TypedThreadSafeFunction<Engine, Outcome, DeliverOutcome>;

class Engine {
 public:
  Engine(int epoll_fd, int wake_fd) : epoll_fd_(epoll_fd), wake_fd_(wake_fd) {}

  ~Engine() {
    Stop();
    if (epoll_fd_ >= 0) close(epoll_fd_);
    if (wake_fd_ >= 0) close(wake_fd_);
  }

  Callback callback;

  // JS thread. Returns the relay id, or 0 with errno/syscall set (nothing was taken).
  uint64_t Start(Napi::Env env, int agent_fd, std::vector<Address> candidates, int64_t dial_timeout_ms,
                 std::string head_out, int64_t idle_ms, int& err, const char*& syscall) {
    int agent = fcntl(agent_fd, F_DUPFD_CLOEXEC, 0);
    if (agent < 0) {
      err = errno;
      syscall = "dup";
      return 0;
    }
    if (!EnsureThread(err, syscall)) {
      close(agent);
      return 0;
    }
    auto* r = new Relay();
    r->id = next_id_++;
    r->agent = agent;
    r->out.src = agent;
    r->out.head = std::move(head_out);
    r->out.gated = true;
    r->in.dst = agent;
    r->idle_ms = idle_ms;
    r->candidates = std::move(candidates);
    r->dial_timeout_ms = dial_timeout_ms;
    if (ConnectNext(r)) SendHeadIfConnected(r);
    // From the Post on, `r` belongs to the relay thread, which may finish and delete it
    // before Post returns (a dial that fails at once): nothing below may touch it.
    const uint64_t id = r->id;
    active_.fetch_add(1, std::memory_order_relaxed);
    Command c;
    c.kind = Command::kStart;
    c.relay = r;
    if (!Post(std::move(c))) {
      active_.fetch_sub(1, std::memory_order_relaxed);
      if (r->upstream >= 0) close(r->upstream);
      close(agent);
      delete r;
      err = EPIPE;
      syscall = "relay thread";
      return 0;
    }
    if (js_active_++ == 0) callback.Ref(env);
    return id;
  }

  // JS thread: the agent's socket is the relay's alone now; `bytes` go upstream first.
  void Commit(uint64_t id, std::string bytes) {
    Command c;
    c.kind = Command::kCommit;
    c.id = id;
    c.bytes = std::move(bytes);
    Post(std::move(c));
  }

  // JS thread. An unknown or finished id is ignored.
  void Abort(uint64_t id) {
    Command c;
    c.kind = Command::kAbort;
    c.id = id;
    Post(std::move(c));
  }

  // JS thread, from DeliverOutcome: a relay JS will hear no more about.
  void Settled(Napi::Env env) {
    if (js_active_ > 0 && --js_active_ == 0) callback.Unref(env);
  }

  size_t Active() const { return active_.load(std::memory_order_relaxed); }

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
  bool dead_ = false;              // guarded by mutex_: the thread has stopped for good
  uint64_t next_id_ = 1;           // JS thread; 0 is the wake-up tag in epoll
  size_t js_active_ = 0;           // JS thread: relays whose end JS has not heard yet
  std::atomic<size_t> active_{0};

  // Relay thread only.
  std::unordered_map<uint64_t, Relay*> relays_;
  std::vector<uint64_t> ready_;
  std::vector<uint64_t> dialing_;  // ids with a connect in progress (deadlines to watch)
  std::unique_ptr<char[]> buffer_;  // the next recv() lands here
  std::vector<std::unique_ptr<char[]>> spare_;
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
      thread_ = std::thread([this] {
        pthread_setname_np(pthread_self(), "keel-relay");
        Loop();
      });
    } catch (const std::exception&) {
      err = EAGAIN;
      syscall = "pthread_create";
    }
    pthread_sigmask(SIG_SETMASK, &previous, nullptr);
    return thread_.joinable();
  }

  // False when the thread has stopped for good (see Loop): nobody would run `c`.
  bool Post(Command c) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (dead_) return false;
      commands_.push_back(std::move(c));
    }
    Wake();
    return true;
  }

  void Wake() {
    uint64_t one = 1;
    // EAGAIN means the counter is already non-zero: the thread will wake anyway.
    while (write(wake_fd_, &one, sizeof one) < 0 && errno == EINTR) {
    }
  }

  void Send(Outcome* o) {
    // Unbounded queue: only napi_closing (the environment is going away) can fail.
    if (callback.NonBlockingCall(o) != napi_ok) delete o;
  }

  int NextTimeout() {
    if (!ready_.empty()) return 0;
    int64_t now = NowMs();
    int64_t wake_at = -1;
    for (uint64_t id : dialing_) {
      auto it = relays_.find(id);
      if (it != relays_.end() && (wake_at < 0 || it->second->dial_deadline_ms < wake_at)) wake_at = it->second->dial_deadline_ms;
    }
    if (idle_relays_ > 0 && (wake_at < 0 || next_idle_scan_ms_ < wake_at)) wake_at = next_idle_scan_ms_;
    if (wake_at < 0) return -1;
    return static_cast<int>(std::min<int64_t>(std::max<int64_t>(0, wake_at - now), 60'000));
  }

  void Loop() {
    std::vector<epoll_event> events(256);
    std::vector<uint64_t> turn;
    for (;;) {
      int n = epoll_wait(epoll_fd_, events.data(), static_cast<int>(events.size()), NextTimeout());
      if (n < 0) {
        if (errno == EINTR) continue;
        // Cannot wait any more: end every relay rather than leave them hanging, and
        // refuse new ones (the proxy then relays in JS).
        int err = errno;
        std::vector<Command> orphans;
        {
          std::lock_guard<std::mutex> lock(mutex_);
          dead_ = true;
          orphans.swap(commands_);
        }
        for (Command& c : orphans) {
          if (c.kind == Command::kStart) relays_.emplace(c.relay->id, c.relay);
        }
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
        bool upstream = (tag & 1) == 1;
        if (r->dialing) {
          if (upstream) ConnectDone(r);
          continue;  // agent events wait: nothing flows before the upstream is there
        }
        if ((events[i].events & EPOLLERR) != 0) {
          int so_error = SocketError(upstream ? r->upstream : r->agent);
          if (so_error != 0) {
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
      ExpireDials();
      if (idle_relays_ > 0 && NowMs() >= next_idle_scan_ms_) ScanIdle();
    }
  }

  static int SocketError(int fd) {
    int so_error = 0;
    socklen_t len = sizeof so_error;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &so_error, &len) != 0) return errno;
    return so_error;
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
    for (Command& c : commands) {
      if (c.kind == Command::kStart) {
        Add(c.relay);
        continue;
      }
      auto it = relays_.find(c.id);
      if (it == relays_.end()) continue;
      Relay* r = it->second;
      if (c.kind == Command::kAbort) {
        Finish(r, ECANCELED, "abort");
      } else if (r->out.gated) {
        r->out.gated = false;
        r->out.head.append(c.bytes);
        Queue(r);
      }
    }
    if (quit) {
      CloseAll(ECANCELED, "shutdown");
      return false;
    }
    return true;
  }

  void Add(Relay* r) {
    relays_.emplace(r->id, r);
    if (!Watch(r->agent, r->id << 1)) {
      Finish(r, errno, "epoll_ctl");
      return;
    }
    if (r->upstream >= 0) AwaitConnect(r);  // started on the JS thread
    else DialNext(r);
  }

  bool Watch(int fd, uint64_t tag) {
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
    ev.data.u64 = tag;
    return epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev) == 0;
  }

  // Start connecting to the next candidate; when none is left, tell JS why.
  void DialNext(Relay* r) {
    if (ConnectNext(r)) {
      AwaitConnect(r);
      return;
    }
    auto* o = new Outcome(Outcome::kDialFailed, r->id);
    o->text = r->failures.empty() ? "no address to dial" : r->failures;
    o->timed_out = !r->failures.empty() && r->all_timed_out;
    Drop(r, o);
  }

  // socket() and a non-blocking connect() to the next candidate that takes one; false
  // when none is left. Touches only `r`: the JS thread runs it for the first candidate,
  // before the relay is posted, so the SYN leaves without waiting for this thread.
  static bool ConnectNext(Relay* r) {
    while (r->next_candidate < r->candidates.size()) {
      r->attempt = r->next_candidate++;
      const Address& a = r->candidates[r->attempt];
      int fd = socket(a.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      if (fd < 0) {
        DialFailure(r, ErrnoName(errno), false);
        continue;
      }
      int one = 1;
      // Small writes (a ClientHello, a request) go out at once; Nagle adds ~40 ms per connection.
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      if (connect(fd, reinterpret_cast<const sockaddr*>(&a.addr), a.len) != 0 && errno != EINPROGRESS) {
        DialFailure(r, ErrnoName(errno), false);
        close(fd);
        continue;
      }
      r->upstream = fd;
      r->dial_deadline_ms = NowMs() + r->dial_timeout_ms;
      return true;
    }
    return false;
  }

  // getpeername() says whether a connect is complete, without consuming a pending
  // socket error the way send() or SO_ERROR would.
  static bool IsConnected(int fd) {
    sockaddr_storage peer{};
    socklen_t len = sizeof peer;
    return getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &len) == 0;
  }

  // A loopback connect is usually complete when connect() returns: then the head can go
  // out from the calling thread at once. Anything short of a clean send is left to the
  // relay thread.
  static void SendHeadIfConnected(Relay* r) {
    if (r->out.head.empty() || !IsConnected(r->upstream)) return;
    ssize_t n = send(r->upstream, r->out.head.data(), r->out.head.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      r->out.head_written = static_cast<size_t>(n);
      r->out.bytes = static_cast<uint64_t>(n);
    }
  }

  // Watch a connect in progress; epoll reports a connect that is already complete at once.
  void AwaitConnect(Relay* r) {
    if (!Watch(r->upstream, (r->id << 1) | 1)) {
      Finish(r, errno, "epoll_ctl");
      return;
    }
    dialing_.push_back(r->id);
  }

  static void DialFailure(Relay* r, const std::string& what, bool timed_out) {
    if (!r->failures.empty()) r->failures += "; ";
    r->failures += r->candidates[r->attempt].text + " " + what;
    if (!timed_out) r->all_timed_out = false;
  }

  void StopDialing(Relay* r) {
    for (size_t i = 0; i < dialing_.size(); i++) {
      if (dialing_[i] == r->id) {
        dialing_[i] = dialing_.back();
        dialing_.pop_back();
        break;
      }
    }
  }

  // The upstream socket became writable or failed while connecting.
  void ConnectDone(Relay* r) {
    // Bytes already sent (SendHeadIfConnected) prove the connect succeeded: an error now
    // (the upstream reset after reading the head) ends a relayed connection, not a dial.
    bool established = r->out.bytes > 0;
    int err = SocketError(r->upstream);
    // Writable is not always connected; getpeername says for sure.
    if (err == 0 && !IsConnected(r->upstream)) {
      if (errno == ENOTCONN && !established) return;  // still connecting: the next event decides
      err = errno;
    }
    StopDialing(r);
    if (err != 0 && !established) {
      DialFailure(r, ErrnoName(err), false);
      CloseUpstream(r);
      DialNext(r);
      return;
    }
    r->dialing = false;
    r->out.dst = r->upstream;
    r->in.src = r->upstream;
    r->last_active_ms = NowMs();
    if (r->idle_ms > 0 && idle_relays_++ == 0) next_idle_scan_ms_ = NowMs() + ScanInterval(r->idle_ms);
    auto* o = new Outcome(Outcome::kConnected, r->id);
    o->text = r->candidates[r->attempt].ip;
    Send(o);
    if (err != 0) Finish(r, err, "socket");
    else Progress(r);  // the rest of the head goes upstream now, not after a round trip through JS
  }

  void ExpireDials() {
    if (dialing_.empty()) return;
    int64_t now = NowMs();
    std::vector<Relay*> expired;
    for (uint64_t id : dialing_) {
      auto it = relays_.find(id);
      if (it != relays_.end() && now >= it->second->dial_deadline_ms) expired.push_back(it->second);
    }
    for (Relay* r : expired) {
      // A connect that completed (its event not read yet), or that already carried the
      // head, won the race with its deadline: it is connected, never a timeout.
      if (r->out.bytes > 0 || IsConnected(r->upstream)) {
        ConnectDone(r);
        continue;
      }
      StopDialing(r);
      DialFailure(r, "no answer in " + std::to_string(r->dial_timeout_ms) + " ms", true);
      CloseUpstream(r);
      DialNext(r);
    }
  }

  void CloseUpstream(Relay* r) {
    if (r->upstream < 0) return;
    close(r->upstream);  // ours alone: this also takes it out of epoll
    r->upstream = -1;
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
    Step s = Drain(r, d, d.head.data(), d.head.size(), d.head_written, err, syscall);
    if (s != Step::kDone) return s;
    if (!d.head.empty()) {
      std::string().swap(d.head);
      d.head_written = 0;
    }
    if (d.held != nullptr) {
      s = Drain(r, d, d.held.get(), d.held_len, d.held_off, err, syscall);
      if (s != Step::kDone) return s;
      Recycle(std::move(d.held));
    }
    if (d.gated) return Step::kWait;
    return Copy(r, d, err, syscall);
  }

  // Write data[off, len) to d.dst. kDone: all written; kWait: dst is full; kError: err
  // and syscall are set.
  Step Drain(Relay* r, Direction& d, const char* data, size_t len, size_t& off, int& err, const char*& syscall) {
    while (off < len) {
      ssize_t n = send(d.dst, data + off, len - off, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN) return Step::kWait;
        err = errno;
        syscall = "send";
        return Step::kError;
      }
      off += static_cast<size_t>(n);
      d.bytes += static_cast<uint64_t>(n);
      r->last_active_ms = NowMs();
    }
    return Step::kDone;
  }

  // Read buffers (kReadBytes each) kept for reuse: a buffer handed to a direction whose
  // dst was full comes back here once written, so backpressure costs no copy and no
  // allocation.
  std::unique_ptr<char[]> TakeBuffer() {
    if (spare_.empty()) return std::unique_ptr<char[]>(new char[kReadBytes]);
    std::unique_ptr<char[]> b = std::move(spare_.back());
    spare_.pop_back();
    return b;
  }

  void Recycle(std::unique_ptr<char[]> b) {
    if (spare_.size() < kSpareBuffers) spare_.push_back(std::move(b));
  }

  // recv() into the thread's buffer, send() from it. When dst does not take it all, the
  // buffer itself becomes the direction's `held` (no copy), the thread takes another,
  // and dst's EPOLLOUT resumes the direction before anything more is read.
  Step Copy(Relay* r, Direction& d, int& err, const char*& syscall) {
    size_t moved = 0;
    while (moved < kTurnBudget) {
      if (d.eof) {
        if (!d.shut) {
          d.shut = true;
          shutdown(d.dst, SHUT_WR);
        }
        return Step::kWait;
      }
      if (buffer_ == nullptr) buffer_ = TakeBuffer();
      ssize_t n = recv(d.src, buffer_.get(), kReadBytes, MSG_DONTWAIT);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN) break;
        err = errno;
        syscall = "recv";
        return Step::kError;
      }
      if (n == 0) {
        d.eof = true;
        continue;
      }
      ssize_t w;
      do {
        w = send(d.dst, buffer_.get(), static_cast<size_t>(n), MSG_NOSIGNAL | MSG_DONTWAIT);
      } while (w < 0 && errno == EINTR);
      if (w < 0) {
        if (errno != EAGAIN) {
          err = errno;
          syscall = "send";
          return Step::kError;
        }
        w = 0;
      }
      d.bytes += static_cast<uint64_t>(w);
      moved += static_cast<size_t>(n);
      if (w < n) {
        d.held = std::move(buffer_);
        d.held_off = static_cast<size_t>(w);
        d.held_len = static_cast<size_t>(n);
        r->last_active_ms = NowMs();
        return Step::kWait;
      }
    }
    if (moved > 0) r->last_active_ms = NowMs();
    return moved >= kTurnBudget ? Step::kBudget : Step::kWait;
  }

  // End a relay: JS hears `o` (a failed dial) or, when it is null, the relay's outcome.
  // Before the commit JS still holds the agent's socket, whose open file description
  // our dup shares: it leaves epoll only by an explicit delete.
  void Drop(Relay* r, Outcome* o) {
    epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, r->agent, nullptr);
    close(r->agent);
    CloseUpstream(r);
    if (r->dialing) StopDialing(r);
    if (!r->dialing && r->idle_ms > 0) idle_relays_--;
    relays_.erase(r->id);
    active_.fetch_sub(1, std::memory_order_relaxed);
    Send(o);
    delete r;
  }

  void Finish(Relay* r, int err, const char* syscall) {
    Outcome* o;
    if (r->dialing) {
      // Aborted (or the agent failed) before the upstream answered: a dial that did not happen.
      o = new Outcome(Outcome::kDialFailed, r->id);
      o->err = err;
      o->syscall = syscall;
      o->text = err == ECANCELED ? "aborted while dialing" : std::string(syscall) + ": " + ErrnoName(err);
    } else {
      o = new Outcome(Outcome::kDone, r->id);
      o->bytes_out = r->out.bytes;
      o->bytes_in = r->in.bytes;
      o->err = err;
      o->syscall = syscall;
    }
    Drop(r, o);
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
      if (r->dialing || r->idle_ms <= 0) continue;
      if (now - r->last_active_ms >= r->idle_ms) expired.push_back(r);
      interval = std::min(interval, ScanInterval(r->idle_ms));
    }
    for (Relay* r : expired) Finish(r, ETIMEDOUT, "idle");
    next_idle_scan_ms_ = now + interval;
  }
};

void DeliverOutcome(Napi::Env env, Napi::Function fn, Engine* engine, Outcome* o) {
  if (env != nullptr && !fn.IsEmpty()) {
    if (o->kind != Outcome::kConnected) engine->Settled(env);
    static const char* kKinds[] = {"connected", "dialFailed", "done"};
    Napi::Object event = Napi::Object::New(env);
    event.Set("kind", Napi::String::New(env, kKinds[o->kind]));
    if (o->kind == Outcome::kDone) {
      event.Set("bytesOut", Napi::Number::New(env, static_cast<double>(o->bytes_out)));
      event.Set("bytesIn", Napi::Number::New(env, static_cast<double>(o->bytes_in)));
    }
    if (o->err != 0) event.Set("errno", Napi::Number::New(env, o->err));
    if (o->syscall != nullptr) event.Set("syscall", Napi::String::New(env, o->syscall));
    if (!o->text.empty()) event.Set("text", Napi::String::New(env, o->text));
    if (o->timed_out) event.Set("timedOut", Napi::Boolean::New(env, true));
    try {
      fn.Call({Napi::Number::New(env, static_cast<double>(o->id)), event});
    } catch (const Napi::Error& e) {
      // A throw in the JS callback is a bug there: report it as uncaught, not terminate().
      e.ThrowAsJavaScriptException();
    }
  }
  delete o;
}

Engine* EngineOf(const Napi::CallbackInfo& info, const char* usage) {
  if (info.Length() < 1 || !info[0].IsExternal()) throw Napi::TypeError::New(info.Env(), usage);
  return info[0].As<Napi::External<Engine>>().Data();
}

// A relay id; 0 (which no relay has) for anything that is not one.
uint64_t IdOf(const Napi::CallbackInfo& info, const char* usage) {
  if (info.Length() < 2 || !info[1].IsNumber()) throw Napi::TypeError::New(info.Env(), usage);
  double id = info[1].As<Napi::Number>().DoubleValue();
  return id >= 1 && id <= 9007199254740991.0 ? static_cast<uint64_t>(id) : 0;
}

std::string BytesOf(Napi::Env env, const Napi::Value& v) {
  if (v.IsUndefined() || v.IsNull()) return std::string();
  if (!v.IsBuffer()) throw Napi::TypeError::New(env, "bytes must be a Buffer or undefined");
  auto b = v.As<Napi::Buffer<char>>();
  return std::string(b.Data(), b.Length());
}

// "127.0.0.1" / "::1" and a port -> a sockaddr; throws for anything but a literal IP.
Address ParseAddress(Napi::Env env, const std::string& ip, int port) {
  Address a;
  a.ip = ip;
  if (ip.find(':') == std::string::npos) {
    auto* sin = reinterpret_cast<sockaddr_in*>(&a.addr);
    sin->sin_family = AF_INET;
    sin->sin_port = htons(static_cast<uint16_t>(port));
    if (inet_pton(AF_INET, ip.c_str(), &sin->sin_addr) != 1) throw Napi::TypeError::New(env, "not an IP address: " + ip);
    a.len = sizeof(sockaddr_in);
    a.text = ip + ":" + std::to_string(port);
  } else {
    auto* sin6 = reinterpret_cast<sockaddr_in6*>(&a.addr);
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = htons(static_cast<uint16_t>(port));
    if (inet_pton(AF_INET6, ip.c_str(), &sin6->sin6_addr) != 1) throw Napi::TypeError::New(env, "not an IP address: " + ip);
    a.len = sizeof(sockaddr_in6);
    a.text = "[" + ip + "]:" + std::to_string(port);
  }
  return a;
}

// relayInit(onEvent(id, {kind, ...})) -> engine (an External). Once per environment;
// the thread starts with the first relay.
Napi::Value RelayInit(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsFunction()) throw Napi::TypeError::New(env, "relayInit(onEvent: (id, event) => void)");
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

// relayStart(engine, agentFd, addresses[], port, dialTimeoutMs, headOut?, idleMs) -> id | {errno, syscall}
Napi::Value RelayStart(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* usage =
      "relayStart(engine, agentFd: number, addresses: string[], port: number, dialTimeoutMs: number, headOut?: Buffer, idleMs: number)";
  Engine* engine = EngineOf(info, usage);
  if (info.Length() < 7 || !info[1].IsNumber() || !info[2].IsArray() || !info[3].IsNumber() || !info[4].IsNumber() ||
      !info[6].IsNumber()) {
    throw Napi::TypeError::New(env, usage);
  }
  double fd = info[1].As<Napi::Number>().DoubleValue();
  if (!(fd >= 0 && fd <= 2147483647.0) || fd != static_cast<double>(static_cast<int>(fd))) {
    throw Napi::TypeError::New(env, "agentFd must be an integer >= 0");
  }
  double port = info[3].As<Napi::Number>().DoubleValue();
  if (!(port >= 1 && port <= 65535) || port != static_cast<double>(static_cast<int>(port))) {
    throw Napi::TypeError::New(env, "port must be an integer from 1 to 65535");
  }
  Napi::Array list = info[2].As<Napi::Array>();
  std::vector<Address> candidates;
  for (uint32_t i = 0; i < list.Length(); i++) {
    Napi::Value v = list.Get(i);
    if (!v.IsString()) throw Napi::TypeError::New(env, "addresses must be strings");
    candidates.push_back(ParseAddress(env, v.As<Napi::String>().Utf8Value(), static_cast<int>(port)));
  }
  // Milliseconds, clamped to [1 ms, a day] (NaN and Infinity included): the casts below must not overflow.
  auto millis = [](double v, double fallback) { return v >= 1 ? std::min(v, 86'400'000.0) : fallback; };
  double dial_timeout = millis(info[4].As<Napi::Number>().DoubleValue(), 1);
  double idle = millis(info[6].As<Napi::Number>().DoubleValue(), 0);
  int err = 0;
  const char* syscall = "";
  uint64_t id = engine->Start(env, static_cast<int>(fd), std::move(candidates),
                              static_cast<int64_t>(dial_timeout), BytesOf(env, info[5]), static_cast<int64_t>(idle), err,
                              syscall);
  if (id != 0) return Napi::Number::New(env, static_cast<double>(id));
  Napi::Object obj = Napi::Object::New(env);
  obj.Set("errno", Napi::Number::New(env, err));
  obj.Set("syscall", Napi::String::New(env, syscall));
  return obj;
}

// relayCommit(engine, id, bytes?): JS has let go of the agent's socket; `bytes` (read by
// Node after the head) go upstream before anything else from the agent.
Napi::Value RelayCommit(const Napi::CallbackInfo& info) {
  const char* usage = "relayCommit(engine, id: number, bytes?: Buffer)";
  Engine* engine = EngineOf(info, usage);
  uint64_t id = IdOf(info, usage);
  engine->Commit(id, BytesOf(info.Env(), info.Length() > 2 ? info[2] : info.Env().Undefined()));
  return info.Env().Undefined();
}

// relayAbort(engine, id): close everything now; JS hears ECANCELED (or an aborted dial).
Napi::Value RelayAbort(const Napi::CallbackInfo& info) {
  const char* usage = "relayAbort(engine, id: number)";
  Engine* engine = EngineOf(info, usage);
  engine->Abort(IdOf(info, usage));
  return info.Env().Undefined();
}

// relayStats(engine) -> {active}: for tests and diagnostics.
Napi::Value RelayStats(const Napi::CallbackInfo& info) {
  Engine* engine = EngineOf(info, "relayStats(engine)");
  Napi::Object obj = Napi::Object::New(info.Env());
  obj.Set("active", Napi::Number::New(info.Env(), static_cast<double>(engine->Active())));
  return obj;
}

}  // namespace

void Init(Napi::Env env, Napi::Object exports) {
  exports.Set("relayInit", Napi::Function::New(env, RelayInit, "relayInit"));
  exports.Set("relayStart", Napi::Function::New(env, RelayStart, "relayStart"));
  exports.Set("relayCommit", Napi::Function::New(env, RelayCommit, "relayCommit"));
  exports.Set("relayAbort", Napi::Function::New(env, RelayAbort, "relayAbort"));
  exports.Set("relayStats", Napi::Function::New(env, RelayStats, "relayStats"));
}

}  // namespace keel_relay
