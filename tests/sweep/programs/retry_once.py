"""Reads a file page by page and prints its SHA-256; a page that fails is read once
more before giving up (exit 1). A transient fault is masked, a persistent one handled."""
import hashlib
import os
import sys

PAGE = 4096
fd = os.open(sys.argv[1], os.O_RDONLY)
size = os.fstat(fd).st_size
h = hashlib.sha256()
for offset in range(0, size, PAGE):
    try:
        data = os.pread(fd, PAGE, offset)
    except OSError as err:
        print(f"page {offset // PAGE}: {err.strerror}, retrying", file=sys.stderr)
        try:
            data = os.pread(fd, PAGE, offset)
        except OSError as err:
            sys.exit(f"page {offset // PAGE}: {err.strerror} again, giving up")
    h.update(data)
print(h.hexdigest())
