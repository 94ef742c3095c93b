// keel_nft's namespace helpers (netns.cc): making a sandbox's network namespace (lo up,
// AnyIP routes, big packets on lo), entering it on a thread, keel's listening sockets
// made there, and removing it.
#pragma once

#include <napi.h>

#include <functional>
#include <string>

namespace keel_netns {

// strerror_r's text for an errno.
std::string ErrnoText(int err);

// Moves the calling thread into the network namespace at `path` (a /run/netns file).
// Call it only on a thread made for the purpose, which exits afterwards: setns(2)
// changes the calling thread alone, and no JS or libuv thread may change namespace.
// On failure returns false with `error` ("open(...)" or "setns(...)" and the errno's
// text) and `sys_errno` set, and the thread has not moved.
bool Enter(const std::string& path, std::string& error, int& sys_errno);

// Runs body on a thread made for it and waits. False, with `error` set, when the thread
// cannot start or body throws (e.g. bad_alloc, which must not escape a thread).
bool OnThread(const std::function<void()>& body, std::string& error);

// Adds createNetns, listenInNetns and removeNetns to the addon's exports.
void Init(Napi::Env env, Napi::Object exports);

}  // namespace keel_netns
