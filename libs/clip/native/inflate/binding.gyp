{
  "targets": [{
    "target_name": "clip_inflate",
    "sources": ["clip-inflate.c"],
    "cflags": ["-O2", "-Wall"]
  }]
}
