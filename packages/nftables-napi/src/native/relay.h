// keel_nft's socket relay (relay.cc): dials an allowed connection's upstream and moves
// the bytes between it and the agent's socket on a thread of its own.
#pragma once

#include <napi.h>

namespace keel_relay {

// Adds relayInit, relayStart and relayAbort to the addon's exports.
void Init(Napi::Env env, Napi::Object exports);

}  // namespace keel_relay
