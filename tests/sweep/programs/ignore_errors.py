"""Reads a file page by page and prints its SHA-256, taking a page it cannot read for
zeros: a program that turns bad storage into wrong results (verdict: silent)."""
import hashlib
import os
import sys

PAGE = 4096
fd = os.open(sys.argv[1], os.O_RDONLY)
size = os.fstat(fd).st_size
h = hashlib.sha256()
for offset in range(0, size, PAGE):
    try:
        h.update(os.pread(fd, PAGE, offset))
    except OSError:
        h.update(bytes(min(PAGE, size - offset)))
print(h.hexdigest())
