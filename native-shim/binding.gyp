{
  "targets": [
    {
      "target_name": "vhost_user_shim",
      "sources": ["src/shim.c"],
      "cflags": ["-Wall", "-Wextra", "-Wno-unused-parameter", "-O2"],
      "defines": ["NAPI_VERSION=8"]
    }
  ]
}
