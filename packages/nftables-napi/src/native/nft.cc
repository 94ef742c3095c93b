// keel_nft: a thin N-API binding to libnftables, plus the SO_ORIGINAL_DST lookup, plus
// the namespace helpers of netns.cc and the socket relay of relay.cc.
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

#include "netns.h"
#include "relay.h"

#include <nftables/libnftables.h>  // has its own extern "C"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <mutex>
#include <string>
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
  if (!keel_netns::Enter(req.netns, res.error, res.sys_errno)) {
    res.failed_at = "netns";
    return;
  }
  RunHere(req, res);
}

void Run(const RunRequest& req, RunResult& res) {
  if (req.netns.empty()) {
    RunHere(req, res);
    return;
  }
  if (!keel_netns::OnThread([&req, &res] { RunInNetns(req, res); }, res.error)) {
    res.rc = -1;
    res.failed_at = "thread";
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


Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("run", Napi::Function::New(env, RunSync, "run"));
  exports.Set("runAsync", Napi::Function::New(env, RunAsync, "runAsync"));
  exports.Set("originalDst", Napi::Function::New(env, OriginalDst, "originalDst"));
  keel_netns::Init(env, exports);
  keel_relay::Init(env, exports);
  return exports;
}

}  // namespace

NODE_API_MODULE(keel_nft, Init)
