{
  "targets": [{
    "target_name": "fuse",
    "sources": ["fuse-bytes.c"],
    "include_dirs": [
      "<!(node -p \"require('path').dirname(require.resolve('napi-macros/package.json'))\")"
    ],
    "cflags": [
      "-iquote", "<!(node -p \"require('path').dirname(require.resolve('fuse-native/package.json'))\")",
      "<!@(pkg-config --cflags fuse)", "-O2", "-Wall"
    ],
    "libraries": ["<!@(pkg-config --libs fuse)"]
  }]
}
