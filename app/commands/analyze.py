"""`greedysign analyze`: cross-mutual information between layers, the information plane, and
(for a run folder with snapshots) each layer's convergence over training."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from data.records import DataError
from model.choices import (
    ANALYSIS_ALPHA,
    ANALYSIS_KNN,
    ANALYSIS_POOL_TO,
    ANALYSIS_PROBE_IMAGES,
    ANALYSIS_SUBSETS,
    ANALYSIS_UNITS,
)
from model.options import count, device_name, renyi_order
from model.runs import folder_fault


def register(commands: argparse._SubParsersAction) -> None:
    analyze = commands.add_parser(
        "analyze",
        help="information analysis: cross-MI of layers, information plane, convergence",
        description="Measure every layer's representation of a fixed probe batch with the "
        "matrix-based Renyi estimator of the training term. With --model: the cross-MI "
        "matrix and information plane of one model. With a RUN folder holding snapshots/ "
        "(train --snapshot-every N): also each layer's convergence over training, with "
        "figures written to RUN/analysis/ unless --out says otherwise.",
    )
    analyze.add_argument(
        "run",
        type=Path,
        nargs="?",
        default=None,
        metavar="RUN",
        help="run folder with encoder snapshots (snapshots/epoch-NNNN.pt)",
    )
    analyze.add_argument(
        "--model",
        type=Path,
        default=None,
        help="model file or run folder (default: newest run, else the shipped model)",
    )
    analyze.add_argument(
        "--data",
        type=Path,
        action="append",
        default=None,
        help="dataset folder; give it again for several (default: the folders recorded in "
        "the model, if they are here)",
    )
    analyze.add_argument("--json", action="store_true", help="print one JSON object")
    analyze.add_argument(
        "--probe-images",
        type=int,
        default=ANALYSIS_PROBE_IMAGES,
        help="images in the probe batch (all of the subset when it holds fewer)",
    )
    analyze.add_argument(
        "--subset",
        choices=ANALYSIS_SUBSETS,
        default="test",
        help="test: held-out side of the model's split (default); all: every distinct image",
    )
    analyze.add_argument(
        "--units",
        choices=ANALYSIS_UNITS,
        default="modules",
        help="one layer per Greedy-DIB module (default) or per residual block",
    )
    analyze.add_argument(
        "--alpha",
        type=renyi_order,
        default=ANALYSIS_ALPHA,
        help="Renyi entropy order (finite, above 0, not 1)",
    )
    analyze.add_argument(
        "--pool-to",
        type=count,
        default=ANALYSIS_POOL_TO,
        help="average-pool feature maps to at most this size, as the training term does "
        "(0: the full map)",
    )
    analyze.add_argument(
        "--knn", type=int, default=ANALYSIS_KNN, help="kernel width: mean distance to the k nearest"
    )
    analyze.add_argument("--seed", type=int, default=0, help="seeds the probe batch")
    analyze.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="FOLDER",
        help="folder to write the figures and analysis.json in, made if need be (default with "
        "RUN: RUN/analysis; with --model: none)",
    )
    analyze.add_argument(
        "--device", type=device_name, default="cpu", help="cpu (default), auto, cuda or cuda:N"
    )
    analyze.set_defaults(handler=run_analyze)


def run_analyze(args: argparse.Namespace) -> int:
    from model.analysis import (
        Settings,
        analyze_model_file,
        analyze_run,
        format_table,
        to_json,
        write_report,
    )
    from model.device import resolve_device
    from model.runs import resolve_model

    probe = {"probe_images": args.probe_images, "subset": args.subset, "seed": args.seed}
    convergence = None
    out = args.out
    if out is None and args.run is not None and args.run.is_dir():
        out = args.run / "analysis"  # a RUN that is no folder is analyze_run's to report
    # Checked before the analysis (a bad --out failed when minutes of it were done), and
    # made only when the report is written, so that an error before then leaves nothing.
    fault = None if out is None else _report_folder_fault(out)
    if fault is not None:
        print(f"error: {out}: {fault}", file=sys.stderr)
        return 2
    try:
        if args.run is not None and args.model is not None:
            raise ValueError("give either a RUN folder with snapshots or --model, not both")
        settings = Settings(
            units=args.units,
            alpha=args.alpha,
            pool_to=args.pool_to or None,
            knn=args.knn,
            device=str(resolve_device(args.device)),
        )
        if args.run is None:
            info = analyze_model_file(resolve_model(args.model), args.data, settings, **probe)
        else:
            info, convergence = analyze_run(args.run, args.data, settings, **probe)
    except (DataError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    # The numbers first: a report that fails to write (a full disk) loses nothing measured.
    if args.json:
        print(json.dumps(to_json(info, convergence)))
    else:
        print(format_table(info, convergence))
    try:
        written = write_report(out, info, convergence) if out is not None else []
    except OSError as error:
        print(f"error: writing the report in {out}: {error}", file=sys.stderr)
        return 2
    if written and not args.json:
        print(f"\nwrote {', '.join(str(path) for path in written)}")
    return 0


def _report_folder_fault(out: Path) -> str | None:
    """Why the report cannot be written in the folder `out`, or None."""
    if out.exists() and not out.is_dir():
        return "is a file; the report goes in a folder (--out FOLDER)"
    fault = folder_fault(out)
    return None if fault is None else f"cannot write the report there ({fault})"
