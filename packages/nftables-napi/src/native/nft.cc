// keel_nft: a thin N-API binding to libnftables, plus the SO_ORIGINAL_DST lookup, plus
// keel's listening sockets made inside a sandbox namespace (listenInNetns, below), plus
// the socket relay of relay.cc.
//
// Kept as small as libnftables' own Python binding (py/src/nftables.py): make a
// context, buffer output and error, run one batch, return {rc, output, error}, free
// the context. All policy logic and all error mapping live in TypeScript (src/nft.ts,
// src/original-dst.ts). C++ throws only for programmer errors (bad argument types);
// operational failures come back as values.
//
// Network namespaces: when a netns path is given, the batch runs on a std::thread made
// for that one call. The thread opens the path, calls setns(fd, CLONE_NEWNET), and only
// then creates the nft context, because the context's netlink socket is bound to the
// namespace it was opened in. The thread exits after the call, so no thread (the JS
// thread, a libuv pool thread) ever changes namespace. setns(CLONE_NEWNET) affects only
// the calling thread (setns(2)).

#include <napi.h>

#include "relay.h"

#include <nftables/libnftables.h>  // has its own extern "C"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <exception>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

// <linux/netfilter_ipv4.h>: SO_ORIGINAL_DST; <linux/netfilter_ipv6/ip6_tables.h>:
// IP6T_SO_ORIGINAL_DST. Both are 80. Defined here because the kernel uapi headers
// clash with glibc's <netinet/in.h>.
#ifndef SO_ORIGINAL_DST
#define SO_ORIGINAL_DST 80
#endif
#ifndef IP6T_SO_ORIGINAL_DST
#define IP6T_SO_ORIGINAL_DST 80
#endif

namespace {

struct RunRequest {
  std::string commands;
  std::string netns;  // empty: run in the calling thread's namespace
  bool json = false;
  bool dry_run = false;
};

struct RunResult {
  int rc = -1;
  std::string output;
  std::string error;
  // Empty when libnftables ran; otherwise the step that failed before it could run:
  // "netns" (open/setns), "thread" (could not start the worker), "ctx" (nft_ctx_new).
  std::string failed_at;
  int sys_errno = 0;
  // The file name libnftables saw (a memfd path), when the batch was fed as a file;
  // error messages start with it ("/proc/self/fd/N:LINE:COL: Error: ...").
  std::string input_name;
};

// libnftables does not document thread safety across contexts, and the async variant
// can run on several pool threads at once, so every libnftables call is serialized.
std::mutex g_nft_mutex;

std::string ErrnoText(int err) {
  char buf[256];
  // GNU strerror_r (g++ defines _GNU_SOURCE): returns a pointer, maybe not into buf.
  return std::string(strerror_r(err, buf, sizeof buf));
}

bool WriteAll(int fd, const std::string& data) {
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      return false;
    }
    done += static_cast<size_t>(n);
  }
  return true;
}

// Runs the batch in whatever namespace the current thread is in.
void RunHere(const RunRequest& req, RunResult& res) {
  std::lock_guard<std::mutex> lock(g_nft_mutex);
  nft_ctx* ctx = nft_ctx_new(NFT_CTX_DEFAULT);
  if (ctx == nullptr) {
    res.rc = -1;
    res.failed_at = "ctx";
    res.error = "nft_ctx_new failed";
    return;
  }
  if (req.json) {
    nft_ctx_output_set_flags(ctx, nft_ctx_output_get_flags(ctx) | NFT_CTX_OUTPUT_JSON);
  }
  nft_ctx_set_dry_run(ctx, req.dry_run);
  if (nft_ctx_buffer_output(ctx) != 0 || nft_ctx_buffer_error(ctx) != 0) {
    nft_ctx_free(ctx);
    res.rc = -1;
    res.failed_at = "ctx";
    res.error = "nft_ctx_buffer_output/nft_ctx_buffer_error failed";
    return;
  }
  // Text batches go in as a file (a memfd) rather than a buffer: libnftables 1.0.6
  // quotes the first line of a buffer under every error, whatever line was wrong,
  // while for a file it quotes the right line (as `nft -f` does). Same parser, same
  // single transaction. JSON errors carry no line, so JSON stays a buffer.
  // Without /proc (or memfd), fall back to the buffer.
  int memfd = req.json ? -1 : memfd_create("keel-nft-batch", MFD_CLOEXEC);
  std::string memfd_path = memfd >= 0 ? "/proc/self/fd/" + std::to_string(memfd) : "";
  if (memfd >= 0 && WriteAll(memfd, req.commands) && access(memfd_path.c_str(), R_OK) == 0) {
    res.input_name = memfd_path;
    res.rc = nft_run_cmd_from_filename(ctx, res.input_name.c_str());
  } else {
    res.rc = nft_run_cmd_from_buffer(ctx, req.commands.c_str());
  }
  if (memfd >= 0) {
    close(memfd);
  }
  const char* out = nft_ctx_get_output_buffer(ctx);
  const char* err = nft_ctx_get_error_buffer(ctx);
  res.output = out != nullptr ? out : "";
  res.error = err != nullptr ? err : "";
  nft_ctx_free(ctx);
}

// Body of the per-call worker thread: enter the namespace, then run. If entering fails,
// nothing runs: a batch must never land in the wrong namespace.
void RunInNetns(const RunRequest& req, RunResult& res) {
  int fd = open(req.netns.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    res.sys_errno = errno;
    res.failed_at = "netns";
    res.error = "open(" + req.netns + "): " + ErrnoText(res.sys_errno);
    return;
  }
  if (setns(fd, CLONE_NEWNET) != 0) {
    res.sys_errno = errno;
    close(fd);
    res.failed_at = "netns";
    res.error = "setns(" + req.netns + ", CLONE_NEWNET): " + ErrnoText(res.sys_errno);
    return;
  }
  close(fd);
  RunHere(req, res);
}

void Run(const RunRequest& req, RunResult& res) {
  if (req.netns.empty()) {
    RunHere(req, res);
    return;
  }
  try {
    std::thread worker([&req, &res] {
      try {
        RunInNetns(req, res);
      } catch (const std::exception& e) {  // e.g. bad_alloc: must not escape the thread
        res.rc = -1;
        res.failed_at = "thread";
        res.error = std::string("netns worker thread failed: ") + e.what();
      }
    });
    worker.join();
  } catch (const std::exception& e) {
    res.rc = -1;
    res.failed_at = "thread";
    res.error = std::string("cannot start the netns worker thread: ") + e.what();
  }
}

RunRequest ParseRunArgs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsString() || !info[1].IsObject()) {
    throw Napi::TypeError::New(env, "run(commands: string, request: {json, dryRun, netns?})");
  }
  RunRequest req;
  req.commands = info[0].As<Napi::String>().Utf8Value();
  if (req.commands.find('\0') != std::string::npos) {
    throw Napi::TypeError::New(env, "commands must not contain NUL characters");
  }
  Napi::Object opts = info[1].As<Napi::Object>();
  req.json = opts.Get("json").ToBoolean().Value();
  req.dry_run = opts.Get("dryRun").ToBoolean().Value();
  Napi::Value netns = opts.Get("netns");
  if (netns.IsString()) {
    req.netns = netns.As<Napi::String>().Utf8Value();
    if (req.netns.empty() || req.netns.find('\0') != std::string::npos) {
      throw Napi::TypeError::New(env, "netns must be a non-empty path");
    }
  } else if (!netns.IsUndefined() && !netns.IsNull()) {
    throw Napi::TypeError::New(env, "netns must be a string path");
  }
  return req;
}

Napi::Object ToObject(Napi::Env env, const RunResult& res) {
  Napi::Object obj = Napi::Object::New(env);
  obj.Set("rc", Napi::Number::New(env, res.rc));
  obj.Set("output", Napi::String::New(env, res.output));
  obj.Set("error", Napi::String::New(env, res.error));
  if (!res.failed_at.empty()) {
    obj.Set("failedAt", Napi::String::New(env, res.failed_at));
  }
  if (res.sys_errno != 0) {
    obj.Set("errno", Napi::Number::New(env, res.sys_errno));
  }
  if (!res.input_name.empty()) {
    obj.Set("inputName", Napi::String::New(env, res.input_name));
  }
  return obj;
}

// run(commands, {json, dryRun, netns?}) -> {rc, output, error, failedAt?, errno?, inputName?}
// Blocks the calling thread until the batch (and its worker thread, if any) is done.
Napi::Value RunSync(const Napi::CallbackInfo& info) {
  RunRequest req = ParseRunArgs(info);
  RunResult res;
  Run(req, res);
  return ToObject(info.Env(), res);
}

class RunWorker : public Napi::AsyncWorker {
 public:
  RunWorker(Napi::Env env, RunRequest req)
      : Napi::AsyncWorker(env, "keel_nft.run"),
        deferred_(Napi::Promise::Deferred::New(env)),
        req_(std::move(req)) {}

  Napi::Promise Promise() const { return deferred_.Promise(); }

  // Runs on a libuv pool thread and must not touch JS. With a netns, Run() makes its
  // own thread, so the pool thread's namespace never changes.
  void Execute() override { Run(req_, res_); }

  void OnOK() override { deferred_.Resolve(ToObject(Env(), res_)); }

  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  RunRequest req_;
  RunResult res_;
};

// runAsync(commands, {json, dryRun, netns?}) -> Promise<{rc, output, error, ...}>
Napi::Value RunAsync(const Napi::CallbackInfo& info) {
  RunRequest req = ParseRunArgs(info);
  auto* worker = new RunWorker(info.Env(), std::move(req));
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

Napi::Object ErrnoResult(Napi::Env env, int err, const char* syscall, int family) {
  Napi::Object obj = Napi::Object::New(env);
  obj.Set("errno", Napi::Number::New(env, err));
  obj.Set("syscall", Napi::String::New(env, syscall));
  if (family >= 0) {
    obj.Set("socketFamily", Napi::Number::New(env, family));
  }
  return obj;
}

bool FormatAddress(int af, const void* addr, std::string& out) {
  char buf[INET6_ADDRSTRLEN];
  if (inet_ntop(af, addr, buf, sizeof buf) == nullptr) {
    return false;
  }
  out = buf;
  return true;
}

// originalDst(fd) -> {address, port, family, localAddress, localPort}
//                  | {errno, syscall, socketFamily?}
// getsockname tells the family. An IPv4 connection accepted on a dual-stack IPv6
// socket has a v4-mapped local address, and conntrack tracked it as IPv4, so it is
// asked with SOL_IP (ipv6_getsockopt hands SOL_IP to ip_getsockopt for such sockets).
Napi::Value OriginalDst(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsNumber()) {
    throw Napi::TypeError::New(env, "originalDst(fd: number)");
  }
  double raw = info[0].As<Napi::Number>().DoubleValue();
  if (!(raw >= 0) || raw > 2147483647.0 || raw != static_cast<double>(static_cast<int>(raw))) {
    throw Napi::TypeError::New(env, "fd must be an integer >= 0");
  }
  int fd = static_cast<int>(raw);

  sockaddr_storage local{};
  socklen_t local_len = sizeof local;
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&local), &local_len) != 0) {
    return ErrnoResult(env, errno, "getsockname", -1);
  }

  bool ask_v4 = false;
  std::string local_address;
  int local_port = 0;
  if (local.ss_family == AF_INET) {
    auto* sin = reinterpret_cast<sockaddr_in*>(&local);
    ask_v4 = true;
    FormatAddress(AF_INET, &sin->sin_addr, local_address);
    local_port = ntohs(sin->sin_port);
  } else if (local.ss_family == AF_INET6) {
    auto* sin6 = reinterpret_cast<sockaddr_in6*>(&local);
    local_port = ntohs(sin6->sin6_port);
    if (IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr)) {
      ask_v4 = true;
      FormatAddress(AF_INET, &sin6->sin6_addr.s6_addr[12], local_address);
    } else {
      FormatAddress(AF_INET6, &sin6->sin6_addr, local_address);
    }
  } else {
    return ErrnoResult(env, EAFNOSUPPORT, "getsockname", local.ss_family);
  }

  Napi::Object obj = Napi::Object::New(env);
  std::string address;
  int port = 0;
  if (ask_v4) {
    sockaddr_in dst{};
    socklen_t len = sizeof dst;
    if (getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, &dst, &len) != 0) {
      return ErrnoResult(env, errno, "getsockopt(SOL_IP, SO_ORIGINAL_DST)", local.ss_family);
    }
    if (!FormatAddress(AF_INET, &dst.sin_addr, address)) {
      return ErrnoResult(env, errno, "inet_ntop", local.ss_family);
    }
    port = ntohs(dst.sin_port);
    obj.Set("family", Napi::Number::New(env, 4));
  } else {
    sockaddr_in6 dst{};
    socklen_t len = sizeof dst;
    if (getsockopt(fd, SOL_IPV6, IP6T_SO_ORIGINAL_DST, &dst, &len) != 0) {
      return ErrnoResult(env, errno, "getsockopt(SOL_IPV6, IP6T_SO_ORIGINAL_DST)",
                         local.ss_family);
    }
    if (!FormatAddress(AF_INET6, &dst.sin6_addr, address)) {
      return ErrnoResult(env, errno, "inet_ntop", local.ss_family);
    }
    port = ntohs(dst.sin6_port);
    obj.Set("family", Napi::Number::New(env, 6));
  }
  obj.Set("address", Napi::String::New(env, address));
  obj.Set("port", Napi::Number::New(env, port));
  obj.Set("localAddress", Napi::String::New(env, local_address));
  obj.Set("localPort", Napi::Number::New(env, local_port));
  return obj;
}

// ---------------------------------------------------------------------------------
// listenInNetns: keel's own sockets inside a sandbox namespace, without a child process.
//
// The same per-call thread as Run(): the thread setns()es into the namespace, creates
// each socket (socket(2) is what ties a socket to a network namespace: the one of the
// calling thread), binds it, and for TCP listens; then it exits and the fds, which the
// whole process shares, go back to JS, where net.Server#listen({fd}) and
// dgram.Socket#bind({fd}) adopt them. It replaces a `nsenter node socket-child.js`
// round trip (a whole Node start) in `keel run`'s set-up. Fail-closed: a socket that
// cannot be made in the namespace is never made anywhere else, and on any failure every
// fd made so far is closed.

struct SocketSpec {
  bool tcp = true;
  int family = AF_INET;
  std::string address;
  int port = 0;
  int backlog = 511;
};

struct ListenResult {
  std::vector<int> fds;
  std::string failed_at;  // "netns", "thread", "socket", "bind", "listen", "setsockopt", "address"
  std::string error;
  int sys_errno = 0;
};

bool MakeSocket(const SocketSpec& spec, ListenResult& res) {
  int type = (spec.tcp ? SOCK_STREAM : SOCK_DGRAM) | SOCK_NONBLOCK | SOCK_CLOEXEC;
  int fd = socket(spec.family, type, 0);
  const std::string what = std::string(spec.tcp ? "tcp " : "udp ") + spec.address + ":" + std::to_string(spec.port);
  if (fd < 0) {
    res.sys_errno = errno;
    res.failed_at = "socket";
    res.error = "socket(" + what + "): " + ErrnoText(res.sys_errno);
    return false;
  }
  auto fail = [&](const char* step) {
    res.sys_errno = errno;
    res.failed_at = step;
    res.error = std::string(step) + "(" + what + "): " + ErrnoText(res.sys_errno);
    close(fd);
    return false;
  };
  int one = 1;
  // As libuv does for TCP servers: a restarted keel can bind at once (TIME_WAIT).
  if (spec.tcp && setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0) return fail("setsockopt");
  sockaddr_storage addr{};
  socklen_t len = 0;
  if (spec.family == AF_INET) {
    auto* sin = reinterpret_cast<sockaddr_in*>(&addr);
    sin->sin_family = AF_INET;
    sin->sin_port = htons(static_cast<uint16_t>(spec.port));
    if (inet_pton(AF_INET, spec.address.c_str(), &sin->sin_addr) != 1) {
      errno = EINVAL;
      return fail("address");
    }
    len = sizeof(sockaddr_in);
  } else {
    if (setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) != 0) return fail("setsockopt");
    auto* sin6 = reinterpret_cast<sockaddr_in6*>(&addr);
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = htons(static_cast<uint16_t>(spec.port));
    if (inet_pton(AF_INET6, spec.address.c_str(), &sin6->sin6_addr) != 1) {
      errno = EINVAL;
      return fail("address");
    }
    len = sizeof(sockaddr_in6);
  }
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), len) != 0) return fail("bind");
  if (spec.tcp && listen(fd, spec.backlog) != 0) return fail("listen");
  res.fds.push_back(fd);
  return true;
}

void ListenHere(const std::string& netns, const std::vector<SocketSpec>& specs, ListenResult& res) {
  int nsfd = open(netns.c_str(), O_RDONLY | O_CLOEXEC);
  if (nsfd < 0) {
    res.sys_errno = errno;
    res.failed_at = "netns";
    res.error = "open(" + netns + "): " + ErrnoText(res.sys_errno);
    return;
  }
  if (setns(nsfd, CLONE_NEWNET) != 0) {
    res.sys_errno = errno;
    close(nsfd);
    res.failed_at = "netns";
    res.error = "setns(" + netns + ", CLONE_NEWNET): " + ErrnoText(res.sys_errno);
    return;
  }
  close(nsfd);
  for (const SocketSpec& spec : specs) {
    if (!MakeSocket(spec, res)) {
      for (int fd : res.fds) close(fd);
      res.fds.clear();
      return;
    }
  }
}

// listenInNetns(netnsPath, [{tcp, family: 4|6, address, port, backlog}])
//   -> {fds: number[]} | {failedAt, error, errno?}
Napi::Value ListenInNetns(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsString() || !info[1].IsArray()) {
    throw Napi::TypeError::New(env, "listenInNetns(netns: string, specs: {tcp, family, address, port, backlog}[])");
  }
  std::string netns = info[0].As<Napi::String>().Utf8Value();
  if (netns.empty() || netns.find('\0') != std::string::npos) {
    throw Napi::TypeError::New(env, "netns must be a non-empty path");
  }
  Napi::Array arr = info[1].As<Napi::Array>();
  std::vector<SocketSpec> specs;
  for (uint32_t i = 0; i < arr.Length(); i++) {
    Napi::Value v = arr.Get(i);
    if (!v.IsObject()) throw Napi::TypeError::New(env, "each socket spec must be an object");
    Napi::Object o = v.As<Napi::Object>();
    SocketSpec spec;
    spec.tcp = o.Get("tcp").ToBoolean().Value();
    int family = o.Get("family").ToNumber().Int32Value();
    if (family != 4 && family != 6) throw Napi::TypeError::New(env, "family must be 4 or 6");
    spec.family = family == 4 ? AF_INET : AF_INET6;
    if (!o.Get("address").IsString()) throw Napi::TypeError::New(env, "address must be a string");
    spec.address = o.Get("address").As<Napi::String>().Utf8Value();
    spec.port = o.Get("port").ToNumber().Int32Value();
    if (spec.port < 0 || spec.port > 65535) throw Napi::TypeError::New(env, "port must be 0-65535");
    Napi::Value backlog = o.Get("backlog");
    if (backlog.IsNumber()) spec.backlog = backlog.As<Napi::Number>().Int32Value();
    specs.push_back(spec);
  }
  ListenResult res;
  try {
    std::thread worker([&] {
      try {
        ListenHere(netns, specs, res);
      } catch (const std::exception& e) {
        for (int fd : res.fds) close(fd);
        res.fds.clear();
        res.failed_at = "thread";
        res.error = std::string("netns worker thread failed: ") + e.what();
      }
    });
    worker.join();
  } catch (const std::exception& e) {
    res.failed_at = "thread";
    res.error = std::string("cannot start the netns worker thread: ") + e.what();
  }
  Napi::Object obj = Napi::Object::New(env);
  if (!res.failed_at.empty()) {
    obj.Set("failedAt", Napi::String::New(env, res.failed_at));
    obj.Set("error", Napi::String::New(env, res.error));
    if (res.sys_errno != 0) obj.Set("errno", Napi::Number::New(env, res.sys_errno));
    return obj;
  }
  Napi::Array fds = Napi::Array::New(env, res.fds.size());
  for (size_t i = 0; i < res.fds.size(); i++) fds.Set(static_cast<uint32_t>(i), Napi::Number::New(env, res.fds[i]));
  obj.Set("fds", fds);
  return obj;
}

// removeNetns(path) -> {} | {errno, syscall}: what `ip netns delete NAME` does
// (iproute2 ip/ipnetns.c remove_ns): detach the bind mount that keeps the namespace
// alive, whose result ip ignores too, then unlink the file. The namespace itself goes
// when its last user (process or open fd) does. One syscall pair instead of starting
// `ip`, at every `keel run`'s teardown. Mounts are per process, not per thread.
Napi::Value RemoveNetns(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) {
    throw Napi::TypeError::New(env, "removeNetns(path: string)");
  }
  std::string path = info[0].As<Napi::String>().Utf8Value();
  if (path.empty() || path.find('\0') != std::string::npos) {
    throw Napi::TypeError::New(env, "path must be a non-empty path");
  }
  umount2(path.c_str(), MNT_DETACH);
  Napi::Object obj = Napi::Object::New(env);
  if (unlink(path.c_str()) != 0) {
    obj.Set("errno", Napi::Number::New(env, errno));
    obj.Set("syscall", Napi::String::New(env, "unlink"));
    obj.Set("error", Napi::String::New(env, "unlink(" + path + "): " + ErrnoText(errno)));
  }
  return obj;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("run", Napi::Function::New(env, RunSync, "run"));
  exports.Set("runAsync", Napi::Function::New(env, RunAsync, "runAsync"));
  exports.Set("originalDst", Napi::Function::New(env, OriginalDst, "originalDst"));
  exports.Set("listenInNetns", Napi::Function::New(env, ListenInNetns, "listenInNetns"));
  exports.Set("removeNetns", Napi::Function::New(env, RemoveNetns, "removeNetns"));
  keel_relay::Init(env, exports);
  return exports;
}

}  // namespace

NODE_API_MODULE(keel_nft, Init)
