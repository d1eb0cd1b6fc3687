"""Maps a file and prints its SHA-256: a bad page kills it with SIGBUS (crashed)."""
import hashlib
import mmap
import sys

with open(sys.argv[1], "rb") as f:
    m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
    print(hashlib.sha256(m).hexdigest())
