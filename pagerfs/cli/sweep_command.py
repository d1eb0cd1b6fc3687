"""`pagerfs sweep IMAGE_OR_DIR [options] -- CMD [ARGS...]` and `pagerfs sweep --replay
JSON --case N`.

Exit statuses: 0 no run crashed, hung or was silent; 1 some run did; 2 bad usage, or a
sweep that cannot be made (an image that does not mount, a command not found, a clean
run that fails). See docs/SWEEP.md.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import warnings

from pagerfs.cli.common import EXIT_OK, CommandError, positive_int

DESCRIPTION = """\
Fail every page CMD touches, one at a time, each run on a fresh mount, and give each run
a verdict: handled (non-zero exit), crashed (killed by a signal), hung (timed out),
silent (exit 0, different output), masked (exit 0, same output, the fault fired),
not-reached (the rule never fired). {} in CMD and ARGS, and $PAGERFS_MNT, are the mount
point; {out} and $PAGERFS_OUT a fresh directory for the run's --output files."""

EPILOG = """\
exit status: 0 when no run crashed, hung or was silent; 1 otherwise; 2 bad usage or a
sweep that cannot be made.

examples:
  pagerfs sweep tree/ -- sha256sum {}/data.bin
  pagerfs sweep doc.img --files 'bash/*' --jobs 4 --report r.html -- tar -tf {}/bash/x.tar
  pagerfs sweep --replay sweep.json --case 7
"""


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text}: expected more than 0 seconds")
    return value


def add_parsers(sub) -> None:
    p = sub.add_parser(
        "sweep", help="fail every page a program touches, one run at a time",
        usage="pagerfs sweep IMAGE_OR_DIR [options] -- CMD [ARGS...]\n"
              "       pagerfs sweep --replay JSON --case N",
        description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("image", nargs="?", metavar="IMAGE_OR_DIR",
                   help="an image, or a directory (built into a temporary image first)")
    p.add_argument("--files", action="append", default=[], metavar="GLOB",
                   help="sweep only files matching GLOB (relative to the image root; "
                        "repeatable; default: every file the program reads)")
    p.add_argument("--error", default="IO_DATA_INTEGRITY", metavar="E[,E...]",
                   help="fault kinds, each a run of its own: IO, IO_DATA_INTEGRITY, "
                        "BAD_STATE, corrupt (default IO_DATA_INTEGRITY)")
    p.add_argument("--transient", action="store_true",
                   help="the page fails for one read (and the kernel's retry of it), then heals")
    p.add_argument("--probability", type=float, metavar="P",
                   help="each request for the pages fails with chance P, drawn from --seed")
    p.add_argument("--group", type=positive_int, default=1, metavar="N",
                   help="fail N consecutive touched pages per run (default 1)")
    p.add_argument("--sample", type=positive_int, metavar="K",
                   help="make only K runs, drawn with --seed")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of --sample and --probability (default 0)")
    p.add_argument("--jobs", type=positive_int, default=1, metavar="N",
                   help="runs in parallel, each on its own mount (default 1)")
    p.add_argument("--timeout", type=_seconds, metavar="SECONDS",
                   help="per run, the clean runs included (default: 10x the clean run, "
                        "at least 5 s; the clean runs 120 s); the whole process group is "
                        "killed")
    p.add_argument("--fresh-mounts", action="store_true",
                   help="a new mount for every run (slower; by default each job reuses one "
                        "mount, checking the file's pages are uncached before each run)")
    p.add_argument("--output", action="append", default=[], metavar="PATH",
                   help="a file the command writes, compared with the clean run's "
                        "(repeatable; e.g. {out}/result.txt)")
    p.add_argument("--json", metavar="FILE", help="write every run as JSON (docs/SWEEP.md)")
    p.add_argument("--report", metavar="FILE.html", help="write a self-contained HTML report")
    p.add_argument("--progress", action="store_true",
                   help="draw the progress bar even when stderr is not a terminal")
    p.add_argument("--quiet", action="store_true", help="no progress bar, no summary")
    p.add_argument("--replay", metavar="JSON", help="re-run one case of an earlier sweep")
    p.add_argument("--case", type=positive_int, metavar="N", help="the case to --replay")
    p.set_defaults(run=run_sweep, command=[])


def split_command(argv: list[str]) -> tuple[list[str], list[str] | None]:
    """`sweep ... -- CMD ARGS`: everything after the first `--` is the program's own,
    never parsed as pagerfs options."""
    if argv[:1] == ["sweep"] and "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1:]
    return argv, None


def _writable(path: str | None) -> None:
    """Refuse an output file that cannot be written before the sweep, not after it
    (without creating it: a refused sweep leaves nothing)."""
    if not path:
        return
    where = path if os.path.exists(path) else (os.path.dirname(path) or ".")
    if os.path.isdir(path) or not os.access(where, os.W_OK):
        reason = "a directory" if os.path.isdir(path) else (
            "permission denied" if os.path.exists(where) else "no such directory")
        raise CommandError(f"{path}: cannot write: {reason}")


def _check_usage(args) -> None:
    if args.replay:
        if args.case is None:
            raise CommandError("--replay needs --case N")
        if args.image or args.command:
            raise CommandError("--replay takes no IMAGE or command: they come from the JSON")
        return
    if args.case is not None:
        raise CommandError("--case goes with --replay JSON")
    if not args.image:
        raise CommandError("sweep needs IMAGE_OR_DIR, then -- CMD [ARGS...]")
    if not args.command:
        raise CommandError("sweep needs a command: pagerfs sweep IMAGE_OR_DIR [options] "
                           "-- CMD [ARGS...]")
    if args.probability is not None and not 0 < args.probability <= 1:
        raise CommandError(f"--probability {args.probability:g}: expected more than 0, "
                           f"at most 1")
    if args.jobs > 1:
        for path in args.output:
            if "{out}" not in path:
                raise CommandError(f"--output {path}: with --jobs {args.jobs} the runs would "
                                   f"share it; write it under {{out}} (e.g. {{out}}/result)")
    _writable(args.json)
    _writable(args.report)


def run_sweep(args) -> int:
    _check_usage(args)
    from pagerfs.sweep.plan import PlanError, parse_errors

    try:
        errors = parse_errors(args.error)
    except PlanError as err:
        raise CommandError(str(err)) from None

    def terminated(signum, frame):
        raise KeyboardInterrupt

    def one_line(message, category, filename, lineno, file=None, line=None):
        # pagerfs.testing warns of files held open at unmount; a user gets one line.
        text = str(message)
        print(text if text.startswith("pagerfs: ") else f"pagerfs: warning: {text}",
              file=sys.stderr)

    previous = signal.signal(signal.SIGTERM, terminated)
    shown = warnings.showwarning
    warnings.showwarning = one_line
    try:
        if args.replay:
            return _replay(args)
        return _sweep(args, errors)
    finally:
        warnings.showwarning = shown
        signal.signal(signal.SIGTERM, previous)


def _failure(err) -> CommandError:
    return CommandError(str(err))


def _sweep(args, errors) -> int:
    from pagerfs import testing
    from pagerfs.sweep import engine, html, results, summary
    from pagerfs.sweep.plan import PlanError, make_plan, select_files
    from pagerfs.sweep.progress import Bar

    command = tuple(args.command)
    try:
        with (engine.image_of(args.image) as (image, source),
              engine.MountPool(engine.Job(image, command, (), 0), args.jobs) as pool):
            job = engine.Job(image, command, tuple(args.output),
                             args.timeout or engine.CLEAN_TIMEOUT)
            reuse = None if args.fresh_mounts else pool
            baseline, files = engine.clean_runs(job, reuse)
            timeout = args.timeout or engine.default_timeout(baseline.duration)
            job = engine.Job(image, command, tuple(args.output), timeout)
            try:
                chosen = select_files(baseline.pages, files, args.files)
                targets = make_plan(chosen, errors, group=args.group, sample=args.sample,
                                    seed=args.seed, transient=args.transient,
                                    probability=args.probability)
            except PlanError as err:
                raise CommandError(str(err)) from None
            settings = results.Settings(
                errors=errors, transient=args.transient, group=args.group,
                sample=args.sample, seed=args.seed, jobs=args.jobs, timeout=timeout,
                files=tuple(args.files), outputs=tuple(args.output),
                mount_options=engine.MOUNT_OPTIONS, fresh_mounts=args.fresh_mounts,
                probability=args.probability)
            bar = Bar(len(targets), enabled=not args.quiet
                      and (args.progress or sys.stderr.isatty()))
            try:
                done = engine.sweep(job, source, settings, baseline, targets,
                                    advance=lambda run: bar.advance(run.verdict),
                                    pool=reuse)
            finally:
                bar.close()
    except (engine.SweepError, testing.PagerfsError) as err:
        raise _failure(err) from None
    if args.json:
        results.dump(done, args.json)
    if args.report:
        with open(args.report, "w", encoding="utf-8") as f:
            f.write(html.render(done))
    if not args.quiet:
        sys.stdout.write(summary.render(done))
    return done.exit_status


def _replay(args) -> int:
    from pagerfs import testing
    from pagerfs.sweep import engine, results
    from pagerfs.sweep.summary import label
    from pagerfs.sweep.verdict import FAILING

    try:
        old = results.load(args.replay)
    except OSError as err:
        raise CommandError(f"{args.replay}: {err.strerror}") from None
    except results.ResultsError as err:
        raise CommandError(f"{args.replay}: {err}") from None
    cases = {run.target.case: run for run in old.runs}
    if args.case not in cases:
        raise CommandError(f"--case {args.case}: {args.replay} has cases 1-{len(old.runs)}")
    was = cases[args.case]
    target = old.source or old.image
    try:
        with engine.image_of(target) as (image, _source):
            job = engine.Job(image, old.command, old.settings.outputs, old.settings.timeout)
            run = engine.run_target(job, was.target, old.baseline.digest)
    except (engine.SweepError, testing.PagerfsError) as err:
        raise _failure(err) from None
    if run.outcome.stderr:
        sys.stderr.write(run.outcome.stderr if run.outcome.stderr.endswith("\n")
                         else run.outcome.stderr + "\n")
    t = run.target
    print(f"case {t.case}: {t.path} {t.rule}: {label(run)} (in the sweep: {label(was)})")
    return 1 if run.verdict in FAILING else EXIT_OK
