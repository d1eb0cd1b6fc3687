"""A sweep's results, and their JSON form (schema in docs/SWEEP.md).

The JSON document is what `--json` writes and `--replay` reads back: it holds enough to
re-run any case (image or source tree, command, outputs, rule, timeout).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping

from pagerfs import __version__
from pagerfs.sweep.plan import Target
from pagerfs.sweep.verdict import FAILING, Outcome, signal_name

SCHEMA = "pagerfs-sweep/1"


class ResultsError(ValueError):
    """A JSON document that is not a sweep this version can read."""


@dataclasses.dataclass(frozen=True)
class Settings:
    errors: tuple[str, ...]
    transient: bool
    group: int
    sample: int | None
    seed: int
    jobs: int
    timeout: float
    files: tuple[str, ...]          # the --files globs
    outputs: tuple[str, ...]        # the --output paths, as given ({out} unexpanded)
    mount_options: tuple[str, ...]
    fresh_mounts: bool = False      # a new mount for every run (else one per job)
    probability: float | None = None


@dataclasses.dataclass(frozen=True)
class Baseline:
    """The clean run: its outcome, and per file the pages it touched and the size."""

    exit_status: int
    digest: str
    duration: float
    pages: Mapping[str, tuple[int, ...]]
    sizes: Mapping[str, int]


@dataclasses.dataclass(frozen=True)
class Run:
    target: Target
    verdict: str
    fired: bool
    outcome: Outcome


@dataclasses.dataclass(frozen=True)
class Sweep:
    image: str
    source: str | None          # the directory the image was built from, if any
    command: tuple[str, ...]    # as given, `{}` standing for the mount point
    settings: Settings
    baseline: Baseline
    runs: tuple[Run, ...]

    @property
    def exit_status(self) -> int:
        return 1 if any(run.verdict in FAILING for run in self.runs) else 0


def counts(runs) -> dict[str, int]:
    out: dict[str, int] = {}
    for run in runs:
        out[run.verdict] = out.get(run.verdict, 0) + 1
    return out


def _run_json(run: Run, command: tuple[str, ...]) -> dict:
    t, o = run.target, run.outcome
    return {
        "case": t.case, "file": t.path, "pages": list(t.pages), "error": t.error,
        "transient": t.transient, "probability": t.probability, "rule_seed": t.seed,
        "rule": t.rule, "command": list(command),
        "verdict": run.verdict, "fired": run.fired, "exit_status": o.exit_status,
        "signal": signal_name(o.signal), "signal_number": o.signal,
        "timed_out": o.timed_out, "duration_s": o.duration, "output_digest": o.digest,
        "stderr": o.stderr,
    }


def to_json(sweep: Sweep) -> dict:
    s, b = sweep.settings, sweep.baseline
    return {
        "schema": SCHEMA,
        "pagerfs_version": __version__,
        "image": sweep.image,
        "source": sweep.source,
        "command": list(sweep.command),
        "settings": {
            "errors": list(s.errors), "transient": s.transient, "group": s.group,
            "sample": s.sample, "seed": s.seed, "jobs": s.jobs, "timeout_s": s.timeout,
            "files": list(s.files), "outputs": list(s.outputs),
            "mount_options": list(s.mount_options), "fresh_mounts": s.fresh_mounts,
            "probability": s.probability,
        },
        "baseline": {
            "exit_status": b.exit_status, "output_digest": b.digest, "duration_s": b.duration,
            "files": {path: {"size": b.sizes.get(path, 0), "pages": list(pages)}
                      for path, pages in sorted(b.pages.items())},
        },
        "counts": counts(sweep.runs),
        "exit_status": sweep.exit_status,
        "runs": [_run_json(run, sweep.command) for run in sweep.runs],
    }


def dump(sweep: Sweep, path: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(to_json(sweep), f, indent=1)
        f.write("\n")


def from_json(doc: Mapping) -> Sweep:
    if not isinstance(doc, Mapping) or doc.get("schema") != SCHEMA:
        found = doc.get("schema") if isinstance(doc, Mapping) else None
        raise ResultsError(f"not a {SCHEMA} document"
                           + (f" (schema {found!r})" if found else ""))
    try:
        s, b = doc["settings"], doc["baseline"]
        settings = Settings(
            errors=tuple(s["errors"]), transient=bool(s["transient"]), group=int(s["group"]),
            sample=s["sample"], seed=int(s["seed"]), jobs=int(s["jobs"]),
            timeout=float(s["timeout_s"]), files=tuple(s["files"]),
            outputs=tuple(s["outputs"]), mount_options=tuple(s["mount_options"]),
            fresh_mounts=bool(s.get("fresh_mounts", False)),
            probability=s.get("probability"))
        baseline = Baseline(
            exit_status=int(b["exit_status"]), digest=b["output_digest"],
            duration=float(b["duration_s"]),
            pages={p: tuple(f["pages"]) for p, f in b["files"].items()},
            sizes={p: int(f["size"]) for p, f in b["files"].items()})
        runs = tuple(
            Run(target=Target(int(r["case"]), r["file"], tuple(r["pages"]), r["error"],
                              bool(r["transient"]), r.get("probability"),
                              r.get("rule_seed")),
                verdict=r["verdict"], fired=bool(r["fired"]),
                outcome=Outcome(exit_status=r["exit_status"], signal=r["signal_number"],
                                timed_out=bool(r["timed_out"]), digest=r["output_digest"],
                                duration=float(r["duration_s"]), stderr=r["stderr"]))
            for r in doc["runs"])
        return Sweep(image=doc["image"], source=doc["source"], command=tuple(doc["command"]),
                     settings=settings, baseline=baseline, runs=runs)
    except (KeyError, TypeError, ValueError) as err:
        raise ResultsError(f"a {SCHEMA} document with a missing or bad field ({err})") from None


def load(path: str) -> Sweep:
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except json.JSONDecodeError as err:
        raise ResultsError(f"not JSON ({err.msg}, line {err.lineno})") from None
    return from_json(doc)
