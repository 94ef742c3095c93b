// keel_nft's socket relay (relay.cc): moves bytes between an agent's socket and its
// upstream socket on a thread of its own, with splice(2), once the proxy has decided.
#pragma once

#include <napi.h>

namespace keel_relay {

// Adds relayInit, relayStart and relayAbort to the addon's exports.
void Init(Napi::Env env, Napi::Object exports);

}  // namespace keel_relay
