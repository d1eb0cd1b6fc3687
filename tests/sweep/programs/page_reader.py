"""Reads a file page by page with pread and prints its SHA-256. What it does with a
page it cannot read is its first argument:

  zeros       takes it for zeros and goes on: bad storage becomes wrong results (silent)
  retry-once  reads it once more before giving up (exit 1): a transient fault is masked,
              a persistent one handled
"""
import hashlib
import os
import sys

PAGE = 4096
mode, path = sys.argv[1:3]
fd = os.open(path, os.O_RDONLY)
size = os.fstat(fd).st_size
h = hashlib.sha256()
for offset in range(0, size, PAGE):
    try:
        data = os.pread(fd, PAGE, offset)
    except OSError as err:
        if mode == "zeros":
            data = bytes(min(PAGE, size - offset))
        else:
            print(f"page {offset // PAGE}: {err.strerror}, retrying", file=sys.stderr)
            try:
                data = os.pread(fd, PAGE, offset)
            except OSError as err:
                sys.exit(f"page {offset // PAGE}: {err.strerror} again, giving up")
    h.update(data)
print(h.hexdigest())
