"""The pieces of tools/bench: data sets, the two file systems, timed probes, the report.

Run it through tools/bench (which installs what is missing first); `python -m benchlib`
with tools/ on sys.path is what that script executes.
"""
