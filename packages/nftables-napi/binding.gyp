{
  # keel_nft: N-API binding to Debian's libnftables (libnftables-dev) plus SO_ORIGINAL_DST,
  # the namespace helpers (keel's sockets made inside a namespace, its loopback's packet
  # size), and the socket relay.
  # Built by scripts/build-native.mjs (the package's `build`), never by an install script.
  "targets": [
    {
      "target_name": "keel_nft",
      "sources": ["src/native/nft.cc", "src/native/netns.cc", "src/native/relay.cc"],
      "dependencies": [
        "<!(node -p \"require('node-addon-api').targets\"):node_addon_api_except"
      ],
      "defines": ["NAPI_VERSION=8"],
      "libraries": ["-lnftables"],
      "cflags": ["-Wall", "-Wextra", "-fstack-protector-strong", "-D_FORTIFY_SOURCE=2"],
      # C++ flags come after common.gypi's Release -O3, so this -O2 is the one in force.
      "cflags_cc": ["-O2"],
      "ldflags": ["-Wl,-z,relro", "-Wl,-z,now"]
    }
  ]
}
