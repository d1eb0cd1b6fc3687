"""The native parts of pagerfs: the store's block codec (pagerfs/store/_codec.c) and the
kernel model's read copy (pagerfs/zircon/_gather.c), each its own layer's.

Everything else about the package is in pyproject.toml. The extension links Debian's
liblz4 and OpenSSL's libcrypto; a machine without a compiler or their headers gets one
line saying what to install, not a package that silently runs slower.
"""

import hashlib

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

WARNINGS = ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers"]
NEEDS = "gcc python3-dev liblz4-dev libssl-dev (tools/setup installs them)"


def digest_of(source: str) -> list[tuple[str, str]]:
    """The SHA-256 of a module's C source, compiled into it as SOURCE_DIGEST, so that
    importing a module built from an older source (a `git pull` without a rebuild) says
    so in one line instead of failing every read (pagerfs/native.py)."""
    with open(source, "rb") as f:
        return [("PAGERFS_SOURCE_DIGEST", '"%s"' % hashlib.sha256(f.read()).hexdigest())]


class BuildExt(build_ext):
    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as err:  # CompileError, LinkError: their text is the compiler's
            raise SystemExit(f"pagerfs: cannot build the native module {ext.name} "
                             f"({type(err).__name__}); it needs {NEEDS}") from None


setup(
    ext_modules=[
        Extension(
            "pagerfs.store._codec",
            sources=["pagerfs/store/_codec.c"],
            libraries=["lz4", "crypto"],
            extra_compile_args=WARNINGS,
            define_macros=digest_of("pagerfs/store/_codec.c"),
        ),
        Extension("pagerfs.zircon._gather", sources=["pagerfs/zircon/_gather.c"],
                  extra_compile_args=WARNINGS, define_macros=digest_of("pagerfs/zircon/_gather.c")),
    ],
    cmdclass={"build_ext": BuildExt},
)
