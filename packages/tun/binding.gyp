{
  "targets": [
    {
      "target_name": "dhtnet_tun",
      "sources": ["src/native/binding.c", "src/native/device.c", "src/native/reader.c"],
      "defines": ["NAPI_VERSION=8"],
      "cflags": ["-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter", "-O2", "-fvisibility=hidden"]
    }
  ]
}
