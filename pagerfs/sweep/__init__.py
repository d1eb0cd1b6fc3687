"""`pagerfs sweep`: fail every page a program touches, one run at a time, and say how
the program took each failure.

  plan     which runs to make, from the pages the clean run's trace shows
  verdict  what one run's outcome means (a pure function)
  ranges   pages with the same verdict, merged into ranges
  process  running the program: its process group, timeout and output digest
  engine   the trace run, the golden outcome and the runs, each on a fresh mount
  report   the summary table, the JSON document and the HTML page
  progress the progress bar

The mounts come from pagerfs.testing; nothing here knows the daemon's insides.
The JSON schema is documented in docs/SWEEP.md.
"""
