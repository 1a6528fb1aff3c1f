"""`cnnlab data`: download, verify and describe datasets."""

from __future__ import annotations

import argparse
import json
import sys

from cnnlab.cli import CliError, add_threads_option, at_least
from cnnlab.data import DATASETS

non_negative = at_least(0)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="download, verify and describe datasets")
    actions = p.add_subparsers(dest="data_command", metavar="ACTION", parser_class=type(p))
    actions.required = True

    dl = actions.add_parser("download", help="fetch a dataset (official URLs, MD5-checked)")
    dl.add_argument("name", choices=sorted(set(DATASETS) - {"folder", "mnist-sample"}),
                    help="dataset to fetch")
    dl.add_argument("--root", required=True, help="folder to download into")
    dl.add_argument("--mirror", help="base URL serving the same file names instead")
    dl.add_argument("--extra", action="store_true", help="also fetch optional files (SVHN extra)")
    dl.add_argument("--retries", type=non_negative, default=3, help="retries per URL (default 3)")
    dl.set_defaults(func=run_download)

    ve = actions.add_parser("verify", help="check files against the official MD5s and counts")
    ve.add_argument("name", choices=sorted(set(DATASETS) - {"folder", "mnist-sample"}),
                    help="dataset to check")
    ve.add_argument("--root", required=True, help="folder holding the dataset's files")
    ve.set_defaults(func=run_verify)

    info = actions.add_parser("info", help="counts, classes and per-channel mean/std")
    info.add_argument("name", choices=DATASETS, help="dataset to describe")
    info.add_argument("--root", help="dataset folder (not needed for mnist-sample)")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.add_argument("--skip-corrupt", action="store_true",
                      help="image folders: skip undecodable images and list them")
    add_threads_option(info)
    info.set_defaults(func=run_info)


def _log(message: str) -> None:
    print(message, file=sys.stderr)


def run_download(args: argparse.Namespace) -> int:
    from cnnlab.data.download import download

    paths = download(args.name, args.root, mirror=args.mirror, extra=args.extra,
                     retries=args.retries, log=_log)
    for path in paths:
        print(path)
    return 0


def run_verify(args: argparse.Namespace) -> int:
    from cnnlab.data.download import verify

    checks = verify(args.name, args.root)
    for check in checks:
        status = "ok" if check.ok else f"FAILED (found {check.found})"
        print(f"{check.what}: expected {check.expected}: {status}")
    failed = [c for c in checks if not c.ok]
    if failed:
        raise CliError(
            f"{len(failed)} of {len(checks)} checks failed; first: {failed[0].what} "
            f"expected {failed[0].expected}, found {failed[0].found}"
        )
    print(f"{args.name}: all {len(checks)} checks passed")
    return 0


def run_info(args: argparse.Namespace) -> int:
    from cnnlab.data.info import dataset_info

    options = {"skip_corrupt": True} if args.skip_corrupt else {}
    try:
        info = dataset_info(args.name, args.root, **options)
    except ImportError as exc:
        raise CliError(str(exc)) from None
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"{args.name}" + (f" ({args.root})" if args.root else ""))
    for split, entry in info["splits"].items():
        shape = "x".join(map(str, entry["shape"])) if entry["shape"] else "varying size"
        names = ", ".join(entry["class_names"][:10])
        more = ", ..." if entry["classes"] > 10 else ""
        mean = ", ".join(f"{m:.4f}" for m in entry["mean"])
        std = ", ".join(f"{s:.4f}" for s in entry["std"])
        print(f"  {split}: {entry['count']} images, {shape}, {entry['classes']} classes "
              f"({names}{more})")
        print(f"    mean [{mean}]  std [{std}]  (from {entry['stats_from']})")
        if entry.get("skipped"):
            print(f"    skipped {len(entry['skipped'])} corrupt images, e.g. {entry['skipped'][0]}")
    return 0
