// keel_nft's namespace helpers: see netns.h. Every call that needs to be inside a
// sandbox's namespace runs on a std::thread made for that one call, which enters the
// namespace and exits afterwards, as nft.cc's batches do.

#include "netns.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/if_link.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <exception>
#include <functional>
#include <string>
#include <thread>
#include <vector>

namespace keel_netns {

std::string ErrnoText(int err) {
  char buf[256];
  // GNU strerror_r (g++ defines _GNU_SOURCE): returns a pointer, maybe not into buf.
  return std::string(strerror_r(err, buf, sizeof buf));
}

bool Enter(const std::string& path, std::string& error, int& sys_errno) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    sys_errno = errno;
    error = "open(" + path + "): " + ErrnoText(sys_errno);
    return false;
  }
  if (setns(fd, CLONE_NEWNET) != 0) {
    sys_errno = errno;
    close(fd);
    error = "setns(" + path + ", CLONE_NEWNET): " + ErrnoText(sys_errno);
    return false;
  }
  close(fd);
  return true;
}

bool OnThread(const std::function<void()>& body, std::string& error) {
  bool ok = true;
  try {
    std::thread worker([&] {
      try {
        body();
      } catch (const std::exception& e) {
        ok = false;
        error = std::string("netns worker thread failed: ") + e.what();
      } catch (...) {  // nothing may escape a thread (std::terminate)
        ok = false;
        error = "netns worker thread failed";
      }
    });
    worker.join();
  } catch (const std::exception& e) {
    ok = false;
    error = std::string("cannot start the netns worker thread: ") + e.what();
  }
  return ok;
}

namespace {

// Why a call failed: the step ("netns", "thread", "socket", "bind", "create", "netlink",
// ...), the message, and the errno when there is one.
struct Failure {
  std::string failed_at;
  std::string error;
  int sys_errno = 0;

  bool Set(const char* step, int err, const std::string& what) {
    failed_at = step;
    sys_errno = err;
    error = what + ": " + ErrnoText(err);
    return false;
  }

  // {failedAt, error, errno?} for JS.
  Napi::Object ToObject(Napi::Env env) const {
    Napi::Object obj = Napi::Object::New(env);
    obj.Set("failedAt", Napi::String::New(env, failed_at));
    obj.Set("error", Napi::String::New(env, error));
    if (sys_errno != 0) obj.Set("errno", Napi::Number::New(env, sys_errno));
    return obj;
  }
};

// Argument i as a path: a non-empty string without NUL (else TypeError with `usage`).
std::string PathArg(const Napi::CallbackInfo& info, size_t i, const char* usage) {
  if (info.Length() <= i || !info[i].IsString()) throw Napi::TypeError::New(info.Env(), usage);
  std::string path = info[i].As<Napi::String>().Utf8Value();
  if (path.empty() || path.find('\0') != std::string::npos) {
    throw Napi::TypeError::New(info.Env(), "the namespace path must be a non-empty path");
  }
  return path;
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
  Failure failure;  // failed_at: "netns", "thread", "socket", "bind", "listen", "setsockopt", "address"
};

bool MakeSocket(const SocketSpec& spec, ListenResult& res) {
  int type = (spec.tcp ? SOCK_STREAM : SOCK_DGRAM) | SOCK_NONBLOCK | SOCK_CLOEXEC;
  int fd = socket(spec.family, type, 0);
  const std::string what = std::string(spec.tcp ? "tcp " : "udp ") + spec.address + ":" + std::to_string(spec.port);
  if (fd < 0) return res.failure.Set("socket", errno, "socket(" + what + ")");
  auto fail = [&](const char* step) {
    res.failure.Set(step, errno, std::string(step) + "(" + what + ")");
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
  if (!Enter(netns, res.failure.error, res.failure.sys_errno)) {
    res.failure.failed_at = "netns";
    return;
  }
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
  const char* usage = "listenInNetns(netns: string, specs: {tcp, family, address, port, backlog}[])";
  std::string netns = PathArg(info, 0, usage);
  if (info.Length() < 2 || !info[1].IsArray()) throw Napi::TypeError::New(env, usage);
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
  if (!OnThread([&] { ListenHere(netns, specs, res); }, res.failure.error)) {
    for (int fd : res.fds) close(fd);
    res.fds.clear();
    res.failure.failed_at = "thread";
  }
  if (!res.failure.failed_at.empty()) return res.failure.ToObject(env);
  Napi::Object obj = Napi::Object::New(env);
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
  std::string path = PathArg(info, 0, "removeNetns(path: string)");
  umount2(path.c_str(), MNT_DETACH);
  int err = unlink(path.c_str()) == 0 ? 0 : errno;  // before any N-API call can change errno
  Napi::Object obj = Napi::Object::New(env);
  if (err != 0) {
    obj.Set("errno", Napi::Number::New(env, err));
    obj.Set("syscall", Napi::String::New(env, "unlink"));
    obj.Set("error", Napi::String::New(env, "unlink(" + path + "): " + ErrnoText(err)));
  }
  return obj;
}

// ---------------------------------------------------------------------------------
// createNetns: a sandbox's namespace, made in-process.
//
// What `ip netns add NAME` and then `ip -n NAME` with `link set lo up`, `route add local
// 0.0.0.0/0 dev lo` and `route add local ::/0 dev lo` did, without starting `ip` twice
// (two process starts were about 10 ms of every `keel run`): /run/netns made a shared
// mount (iproute2 ip/ipnetns.c, netns_add: so the namespace's bind mount also shows in
// mount namespaces made later, as `ip netns exec` makes), an empty file, a thread that
// unshares a new network namespace and bind-mounts its /proc/thread-self/ns/net there,
// then rtnetlink requests from inside it. The thread exits afterwards; the bind mount
// keeps the namespace alive until removeNetns.
//
// It also lets lo build bigger packets. Every byte the agent sends or receives crosses
// this lo, between the agent and keel's proxy. lo takes packets of up to 64 KiB by
// default, so a bulk transfer costs a wakeup, a softirq pass and an ACK per 64 KiB on
// each side of that hop. With BIG TCP sizes (IFLA_GSO_MAX_SIZE for IPv6, Linux 5.19+;
// IFLA_GSO_IPV4_MAX_SIZE for IPv4, 6.3+) one send of the relay's 256 KiB buffer is one
// packet. lo never segments (it offloads everything), so nothing else changes. A kernel
// that refuses the sizes leaves lo as it was; that is reported, not a failure.

// From <linux/if_link.h> of Linux 6.3; Debian 12's headers (6.1) stop before it.
constexpr unsigned short kIflaGsoIpv4MaxSize = 63;
static_assert(IFLA_GSO_MAX_SIZE == 41, "uapi IFLA_GSO_MAX_SIZE");

ifinfomsg LinkOf(int index) {
  ifinfomsg ifi{};
  ifi.ifi_family = AF_UNSPEC;
  ifi.ifi_index = index;
  return ifi;
}

// One rtnetlink request at a time, each waiting for its answer.
class Rtnl {
 public:
  ~Rtnl() {
    if (fd_ >= 0) close(fd_);
  }

  bool Open(Failure& f) {
    fd_ = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
    if (fd_ < 0) return f.Set("netlink", errno, "socket(AF_NETLINK, NETLINK_ROUTE)");
    int one = 1;
    // Best effort: the kernel's reason in words, and acks without our request echoed.
    setsockopt(fd_, SOL_NETLINK, NETLINK_EXT_ACK, &one, sizeof one);
    setsockopt(fd_, SOL_NETLINK, NETLINK_CAP_ACK, &one, sizeof one);
    timeval timeout{2, 0};  // the kernel answers at once; never wait for ever
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    return true;
  }

  // A message: header, then `body` (ifinfomsg or rtmsg); attributes go after it.
  template <typename Body>
  static std::vector<char> Message(uint16_t type, uint16_t flags, const Body& body) {
    std::vector<char> msg(NLMSG_SPACE(sizeof(Body)));
    nlmsghdr hdr{};
    hdr.nlmsg_type = type;
    hdr.nlmsg_flags = static_cast<uint16_t>(NLM_F_REQUEST | flags);
    memcpy(msg.data(), &hdr, sizeof hdr);
    memcpy(msg.data() + NLMSG_HDRLEN, &body, sizeof body);
    return msg;
  }

  static void AddU32(std::vector<char>& msg, unsigned short type, uint32_t value) {
    rtattr attr{};
    attr.rta_len = static_cast<unsigned short>(RTA_LENGTH(sizeof value));
    attr.rta_type = type;
    size_t at = msg.size();
    msg.resize(at + RTA_SPACE(sizeof value));
    memcpy(msg.data() + at, &attr, sizeof attr);
    memcpy(msg.data() + at + RTA_LENGTH(0), &value, sizeof value);
  }

  // A change: sends it asking for an ack, and reads the ack. `what` names it in errors,
  // with the kernel's own reason when it gives one.
  bool Request(std::vector<char> msg, const std::string& what, Failure& f) {
    if (!Send(msg, NLM_F_ACK, what, f)) return false;
    return Receive(what, f, [&](const nlmsghdr* h) {
      if (h->nlmsg_type != NLMSG_ERROR) return kSkip;
      if (h->nlmsg_len < NLMSG_LENGTH(sizeof(nlmsgerr))) return Fail(f, EPROTO, what + ": short ack");
      nlmsgerr ack;
      memcpy(&ack, NLMSG_DATA(h), sizeof ack);
      if (ack.error == 0) return kDone;
      std::string why = ExtAckText(h);
      return Fail(f, -ack.error, what + (why.empty() ? "" : " (" + why + ")"));
    });
  }

  // RTM_GETLINK: the link's u32 attributes of the given types (absent ones left out).
  bool LinkU32s(int index, const std::vector<unsigned short>& types, std::vector<std::pair<unsigned short, uint32_t>>& out, Failure& f) {
    std::vector<char> msg = Message(RTM_GETLINK, 0, LinkOf(index));
    const std::string what = "RTM_GETLINK";
    if (!Send(msg, 0, what, f)) return false;  // the answer is the link, or an error
    return Receive(what, f, [&](const nlmsghdr* h) {
      if (h->nlmsg_type == NLMSG_ERROR) {
        nlmsgerr err{};
        if (h->nlmsg_len >= NLMSG_LENGTH(sizeof(nlmsgerr))) memcpy(&err, NLMSG_DATA(h), sizeof err);
        return Fail(f, err.error < 0 ? -err.error : EPROTO, what);
      }
      if (h->nlmsg_type != RTM_NEWLINK || h->nlmsg_len < NLMSG_LENGTH(sizeof(ifinfomsg))) return kSkip;
      int left = static_cast<int>(h->nlmsg_len - NLMSG_LENGTH(sizeof(ifinfomsg)));
      const char* attrs = reinterpret_cast<const char*>(NLMSG_DATA(h)) + NLMSG_ALIGN(sizeof(ifinfomsg));
      for (const auto* a = reinterpret_cast<const rtattr*>(attrs); RTA_OK(a, left); a = RTA_NEXT(a, left)) {
        for (unsigned short t : types) {
          if (a->rta_type != t || RTA_PAYLOAD(a) < sizeof(uint32_t)) continue;
          uint32_t v;
          memcpy(&v, RTA_DATA(a), sizeof v);
          out.emplace_back(t, v);
        }
      }
      return kDone;
    });
  }

 private:
  enum Verdict { kSkip, kDone, kFailed };

  static Verdict Fail(Failure& f, int err, const std::string& what) {
    f.Set("netlink", err, what);
    return kFailed;
  }

  bool Send(std::vector<char>& msg, uint16_t extra_flags, const std::string& what, Failure& f) {
    nlmsghdr hdr;
    memcpy(&hdr, msg.data(), sizeof hdr);
    hdr.nlmsg_flags = static_cast<uint16_t>(hdr.nlmsg_flags | extra_flags);
    hdr.nlmsg_len = static_cast<uint32_t>(msg.size());
    hdr.nlmsg_seq = ++seq_;
    memcpy(msg.data(), &hdr, sizeof hdr);
    sockaddr_nl kernel{};
    kernel.nl_family = AF_NETLINK;
    if (sendto(fd_, msg.data(), msg.size(), 0, reinterpret_cast<sockaddr*>(&kernel), sizeof kernel) < 0) {
      return f.Set("netlink", errno, "sendto(" + what + ")");
    }
    return true;
  }

  // Reads answers until `on` settles one with our sequence number, skipping anything
  // else (a late answer to an earlier request that timed out). Bounded: rtnetlink queues
  // its answer before sendto returns.
  template <typename On>
  bool Receive(const std::string& what, Failure& f, On on) {
    for (int reads = 0; reads < 16; reads++) {
      ssize_t n;
      do {
        n = recv(fd_, buf_, sizeof buf_, 0);
      } while (n < 0 && errno == EINTR);
      if (n < 0) return f.Set("netlink", errno, "recv(" + what + ")");
      int left = static_cast<int>(n);
      for (const auto* h = reinterpret_cast<const nlmsghdr*>(buf_); NLMSG_OK(h, left); h = NLMSG_NEXT(h, left)) {
        if (h->nlmsg_seq != seq_) continue;
        Verdict v = on(h);
        if (v != kSkip) return v == kDone;
      }
    }
    return f.Set("netlink", EPROTO, what + ": no answer");
  }

  // The kernel's extended-ack text (NLMSGERR_ATTR_MSG), when it sent one.
  static std::string ExtAckText(const nlmsghdr* h) {
    if (!(h->nlmsg_flags & NLM_F_ACK_TLVS) || !(h->nlmsg_flags & NLM_F_CAPPED)) return "";
    size_t len = h->nlmsg_len;
    size_t off = NLMSG_HDRLEN + NLMSG_ALIGN(sizeof(nlmsgerr));
    const char* base = reinterpret_cast<const char*>(h);
    while (off + sizeof(nlattr) <= len) {
      nlattr a;
      memcpy(&a, base + off, sizeof a);
      if (a.nla_len < sizeof(nlattr) || off + a.nla_len > len) break;
      if ((a.nla_type & NLA_TYPE_MASK) == NLMSGERR_ATTR_MSG) {
        return std::string(base + off + NLA_HDRLEN, strnlen(base + off + NLA_HDRLEN, a.nla_len - NLA_HDRLEN));
      }
      off += NLA_ALIGN(a.nla_len);
    }
    return "";
  }

  int fd_ = -1;
  uint32_t seq_ = 0;
  alignas(nlmsghdr) char buf_[8192];
};

// `route add local <any>/0 dev lo` (table local, scope host, proto boot, as ip adds it).
bool AddAnyIpRoute(Rtnl& rtnl, int family, int lo, Failure& f) {
  rtmsg rt{};
  rt.rtm_family = static_cast<unsigned char>(family);
  rt.rtm_dst_len = 0;
  rt.rtm_table = RT_TABLE_LOCAL;
  rt.rtm_protocol = RTPROT_BOOT;
  rt.rtm_scope = RT_SCOPE_HOST;
  rt.rtm_type = RTN_LOCAL;
  std::vector<char> msg = Rtnl::Message(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, rt);
  Rtnl::AddU32(msg, RTA_OIF, static_cast<uint32_t>(lo));
  return rtnl.Request(std::move(msg), family == AF_INET ? "route add local 0.0.0.0/0 dev lo" : "route add local ::/0 dev lo", f);
}

// lo's packet size, best effort: "" when lo now takes `bytes` for IPv4 and IPv6, else why
// not. Read back, because a kernel before 6.3 ignores the IPv4 attribute it does not
// know, and one before the up-front size check may apply the IPv6 size and refuse the
// IPv4 one.
std::string SetLoopbackGso(Rtnl& rtnl, int lo, uint32_t bytes) {
  std::vector<char> msg = Rtnl::Message(RTM_NEWLINK, 0, LinkOf(lo));
  Rtnl::AddU32(msg, IFLA_GSO_MAX_SIZE, bytes);
  Rtnl::AddU32(msg, kIflaGsoIpv4MaxSize, bytes);
  Failure f;
  const std::string what = "link set lo gso_max_size " + std::to_string(bytes);
  std::string refused;
  if (!rtnl.Request(std::move(msg), what, f)) refused = f.error + "; ";
  std::vector<std::pair<unsigned short, uint32_t>> now;
  if (!rtnl.LinkU32s(lo, {IFLA_GSO_MAX_SIZE, kIflaGsoIpv4MaxSize}, now, f)) return refused + f.error;
  uint32_t v6 = 0, v4 = 0;
  for (const auto& [type, value] : now) (type == IFLA_GSO_MAX_SIZE ? v6 : v4) = value;
  if (v6 == bytes && v4 == bytes) return "";
  return refused + "lo's gso_max_size is " + std::to_string(v6) + " and its gso_ipv4_max_size " +
         (v4 == 0 ? std::string("unknown to this kernel") : std::to_string(v4)) + ", not " + std::to_string(bytes);
}

// Inside the new namespace: lo's packet size (best effort, into gso_error), lo up, the
// two AnyIP routes.
bool SetUpLoopback(uint32_t gso_bytes, Failure& f, std::string& gso_error) {
  int lo = static_cast<int>(if_nametoindex("lo"));
  if (lo == 0) return f.Set("netlink", errno, "if_nametoindex(lo)");
  Rtnl rtnl;
  if (!rtnl.Open(f)) return false;
  if (gso_bytes > 0) gso_error = SetLoopbackGso(rtnl, lo, gso_bytes);
  ifinfomsg up = LinkOf(lo);
  up.ifi_flags = IFF_UP;
  up.ifi_change = IFF_UP;
  if (!rtnl.Request(Rtnl::Message(RTM_NEWLINK, 0, up), "link set lo up", f)) return false;
  return AddAnyIpRoute(rtnl, AF_INET, lo, f) && AddAnyIpRoute(rtnl, AF_INET6, lo, f);
}

// An exclusive flock on fd, waiting at most about two seconds (a stuck holder must not
// hang keel run). False when it could not be had.
bool LockWithin2s(int fd) {
  for (int attempt = 0; attempt < 400; attempt++) {
    if (flock(fd, LOCK_EX | LOCK_NB) == 0) return true;
    if (errno != EWOULDBLOCK && errno != EINTR) return false;
    usleep(5000);
  }
  return false;
}

// As ip/ipnetns.c (netns_add) does: /run/netns exists and is a shared mount, made a mount
// point (bound onto itself) first if it is not one, under an exclusive flock of the
// directory, as ip takes it: two creators racing through the bind step stack mounts
// (Debian bug #949235). Like ip, carry on without the lock if it cannot be had.
bool PrepareRunDir(const std::string& dir, Failure& f) {
  if (mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) return f.Set("create", errno, "mkdir(" + dir + ")");
  int lock = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (lock < 0) return f.Set("create", errno, "open(" + dir + ")");
  if (!LockWithin2s(lock)) {
    close(lock);
    lock = -1;
  }
  bool ok = true;
  bool bound = false;
  while (ok && mount("", dir.c_str(), "none", MS_SHARED | MS_REC, nullptr) != 0) {
    if (errno != EINVAL || bound) {
      ok = f.Set("create", errno, "mount(" + dir + ", MS_SHARED)");
    } else if (mount(dir.c_str(), dir.c_str(), "none", MS_BIND | MS_REC, nullptr) != 0) {
      ok = f.Set("create", errno, "mount(" + dir + ", " + dir + ", MS_BIND)");
    }
    bound = true;
  }
  if (lock >= 0) close(lock);  // closing releases the flock
  return ok;
}

// Removes the namespace file (and its bind mount) unless dismissed: every way out of
// CreateHere after the file exists, exceptions included, leaves nothing behind.
class NetnsFileGuard {
 public:
  explicit NetnsFileGuard(const std::string& path) : path_(path) {}
  ~NetnsFileGuard() {
    if (path_.empty()) return;
    umount2(path_.c_str(), MNT_DETACH);  // EINVAL when not mounted yet: fine
    unlink(path_.c_str());
  }
  void Dismiss() { path_.clear(); }

 private:
  std::string path_;
};

// Runs on its own thread, which ends up inside the new namespace and then exits.
void CreateHere(const std::string& path, uint32_t gso_bytes, Failure& f, std::string& gso_error) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos || slash == 0) {
    f.Set("create", EINVAL, "namespace path " + path);
    return;
  }
  if (!PrepareRunDir(path.substr(0, slash), f)) return;
  int fd = open(path.c_str(), O_RDONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0);
  if (fd < 0) {
    f.Set("create", errno, "create " + path);
    return;
  }
  close(fd);
  NetnsFileGuard guard(path);
  if (unshare(CLONE_NEWNET) != 0) {
    f.Set("create", errno, "unshare(CLONE_NEWNET)");
    return;
  }
  // thread-self: this thread's namespace; /proc/self would be the main thread's.
  if (mount("/proc/thread-self/ns/net", path.c_str(), "none", MS_BIND, nullptr) != 0) {
    f.Set("create", errno, "mount(/proc/thread-self/ns/net, " + path + ", MS_BIND)");
    return;
  }
  if (SetUpLoopback(gso_bytes, f, gso_error)) guard.Dismiss();
}

// createNetns(path, loopbackGsoBytes) -> {loopbackGsoError?} | {failedAt, error, errno?}
// loopbackGsoBytes 0 leaves lo's packet size alone.
Napi::Value CreateNetns(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* usage = "createNetns(path: string, loopbackGsoBytes: number)";
  std::string path = PathArg(info, 0, usage);
  if (info.Length() < 2 || !info[1].IsNumber()) throw Napi::TypeError::New(env, usage);
  double raw = info[1].As<Napi::Number>().DoubleValue();
  if (!(raw >= 0) || raw > 4294967295.0 || raw != static_cast<double>(static_cast<uint32_t>(raw))) {
    throw Napi::TypeError::New(env, "loopbackGsoBytes must be an integer from 0 to 2^32-1");
  }
  uint32_t gso_bytes = static_cast<uint32_t>(raw);
  Failure f;
  std::string gso_error;
  if (!OnThread([&] { CreateHere(path, gso_bytes, f, gso_error); }, f.error)) f.failed_at = "thread";
  if (!f.failed_at.empty()) return f.ToObject(env);
  Napi::Object obj = Napi::Object::New(env);
  if (!gso_error.empty()) obj.Set("loopbackGsoError", Napi::String::New(env, gso_error));
  return obj;
}

}  // namespace

void Init(Napi::Env env, Napi::Object exports) {
  exports.Set("listenInNetns", Napi::Function::New(env, ListenInNetns, "listenInNetns"));
  exports.Set("removeNetns", Napi::Function::New(env, RemoveNetns, "removeNetns"));
  exports.Set("createNetns", Napi::Function::New(env, CreateNetns, "createNetns"));
}

}  // namespace keel_netns
