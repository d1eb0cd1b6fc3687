"""pagerfs: a FUSE filesystem whose files are simulated Zircon pager-backed VMOs.

Layers, each in its own package (see docs/ARCHITECTURE.md):
  pagerfs.zircon  the simulated kernel (knows nothing of FUSE or the store)
  pagerfs.store   the compressed, checksummed image (knows nothing of Zircon)
  pagerfs.pager   the user pager: the only bridge between the two
  pagerfs.fuse    the thin pyfuse3 + trio adapter
  pagerfs.cli     the `pagerfs` command
  pagerfs.testing mounts, fault rules and pytest fixtures for test suites
"""

__version__ = "0.1.0"
