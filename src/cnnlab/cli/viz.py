"""`cnnlab viz filters | features | cam | curves | erf`: figures of what a network holds and
does, saved as PNG and SVG (the library functions in ``cnnlab.viz`` return the figures)."""

from __future__ import annotations

import argparse

from cnnlab.cli import CliError
from cnnlab.cli.analysis import add_erf_parser


def register(sub: argparse._SubParsersAction) -> None:
    v = sub.add_parser("viz", help="figures: filters, feature maps, CAM/Grad-CAM, curves, ERF")
    kinds = v.add_subparsers(dest="kind", metavar="KIND", parser_class=type(v))
    kinds.required = True

    p = kinds.add_parser("filters", help="the filter grid of a conv layer (the first by default)")
    p.add_argument("source", metavar="CHECKPOINT_OR_MODEL",
                   help="a checkpoint (or run folder) or a registered model name")
    p.add_argument("--layer", help="qualified name of a Conv2d (default: the first)")
    p.add_argument("--out", default="filters.png", help="PATH[.png]: writes PATH.png, PATH.svg")
    p.set_defaults(func=run_filters)

    p = kinds.add_parser("features", help="feature maps of chosen layers for one image")
    p.add_argument("source", metavar="CHECKPOINT", help="a checkpoint or run folder")
    p.add_argument("image", metavar="IMAGE", help="a JPEG or PNG file")
    p.add_argument("--layer", nargs="+", dest="layers", metavar="NAME",
                   help="layers to show (default: the stage outputs)")
    p.add_argument("--channels", type=int, default=16, help="maps per layer (most active)")
    p.add_argument("--out", default="features.png",
                   help="PATH[.png]: writes PATH.png, PATH.svg")
    p.set_defaults(func=run_features)

    p = kinds.add_parser("cam", help="CAM / Grad-CAM / Grad-CAM++ overlaid on an image")
    p.add_argument("source", metavar="CHECKPOINT", nargs="?",
                   help="a checkpoint or run folder")
    p.add_argument("image", metavar="IMAGE", nargs="?", help="a JPEG or PNG file")
    p.add_argument("--class", dest="target", type=int, help="class index (default: predicted)")
    p.add_argument("--method", choices=("cam", "gradcam", "gradcam++"), default="gradcam",
                   help="CAM (GAP networks), Grad-CAM or Grad-CAM++ (default gradcam)")
    p.add_argument("--layer", help="target layer (default: the family's; see --list-layers)")
    p.add_argument("--fraction", type=float, default=0.2, help="pixels blurred in the check")
    p.add_argument("--list-layers", metavar="MODEL", help="list MODEL's feature-map layers")
    p.add_argument("--out", default="cam.png", help="PATH[.png]: writes PATH.png, PATH.svg")
    p.set_defaults(func=run_cam)

    p = kinds.add_parser("curves", help="train/val/test error vs epoch of several runs")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders holding metrics.jsonl")
    p.add_argument("--title", default="", help="figure title")
    p.add_argument("--out", default="curves.png", help="PATH[.png]: writes PATH.png, PATH.svg")
    p.set_defaults(func=run_curves)

    p = kinds.add_parser("compare", help="top-1 vs GMACs of the zoo (bubble area = params), "
                         "with your runs added (Canziani et al. 2016, Fig. 2)")
    p.add_argument("runs", nargs="*", metavar="RUN_DIR",
                   help="run folders written by `cnnlab train` to add as points")
    p.add_argument("--out", default="compare.png", help="PATH[.png]: writes PATH.png, PATH.svg")
    p.set_defaults(func=run_compare)

    add_erf_parser(kinds)


def _save(fig, out: str) -> int:  # type: ignore[no-untyped-def]
    from cnnlab.viz.figure import save_figure

    for path in save_figure(fig, out):
        print(f"wrote {path}")
    return 0


def run_filters(args: argparse.Namespace) -> int:
    from cnnlab.viz import figure, filters, source

    figure.figure_stem(args.out)  # a bad --out fails before any work
    src = source.load_source(args.source)
    state = "trained" if src.trained else "untrained (random initialisation)"
    return _save(filters.plot_filters(src.model, args.layer, title=f"{src.name}, {state}"),
                 args.out)


def run_features(args: argparse.Namespace) -> int:
    from cnnlab.viz import features, figure, source

    figure.figure_stem(args.out)
    if args.channels < 1:
        raise CliError(f"--channels must be at least 1, got {args.channels}")
    src = source.load_source(args.source)
    x, display = source.load_image(args.image, src)
    valid = list(source.map_layers(src.model, tuple(x.shape[1:])))
    names = args.layers or features.default_feature_layers(src.model)
    for name in names:
        source.find_layer(src.model, name, valid)
    maps = features.feature_maps(src.model, x, names)
    return _save(features.plot_feature_maps(maps, channels=args.channels, image=display),
                 args.out)


def run_cam(args: argparse.Namespace) -> int:
    from cnnlab.viz import cam, figure, source

    if args.list_layers:
        src = source.load_source(args.list_layers)
        size = (src.image_size[0], *(getattr(src.model, "fixed_input_size", None)
                                     or src.image_size[1:]))
        default = cam.default_cam_layer(src.model)
        for name, shape in source.map_layers(src.model, size).items():
            mark = "  (default)" if name == default else ""
            print(f"{name}  {'x'.join(map(str, shape))}{mark}")
        return 0
    if not args.source or not args.image:
        raise CliError("viz cam: give CHECKPOINT IMAGE (or --list-layers MODEL)")
    figure.figure_stem(args.out)
    src = source.load_source(args.source)
    x, display = source.load_image(args.image, src)
    valid = list(source.map_layers(src.model, tuple(x.shape[1:])))
    result = cam.class_activation_map(src.model, x, target=args.target, layer=args.layer,
                                      method=args.method, valid_layers=valid)
    faith = cam.faithfulness(src.model, x, result, fraction=args.fraction)
    name = src.classes[result.target] if result.target < len(src.classes) else ""
    print(f"{src.name}: {result.method} at {result.layer} for class {name or result.target} "
          f"(p={result.score:.3f}); blurring the top {faith.fraction:.0%} pixels drops p by "
          f"{faith.top_drop:+.3f} (logit {faith.logit_top_drop:+.2f}), a random "
          f"{faith.fraction:.0%} by {faith.random_drop:+.3f} (logit "
          f"{faith.logit_random_drop:+.2f})")
    return _save(cam.plot_cam(display, result, faith, class_name=name, title=src.name),
                 args.out)


def run_curves(args: argparse.Namespace) -> int:
    from cnnlab.viz import curves, figure

    figure.figure_stem(args.out)
    runs = {}
    for run in args.runs:
        label = run.rstrip("/").split("/")[-1] or run
        runs[label if label not in runs else run] = curves.load_metrics(run)
    return _save(curves.plot_run_curves(runs, title=args.title), args.out)


def run_compare(args: argparse.Namespace) -> int:
    from cnnlab.viz import compare, figure

    figure.figure_stem(args.out)
    fig, rows = compare.compare_figure(args.runs)
    print(f"{sum(r['source'] == 'published' for r in rows)} published models, "
          f"{sum(r['source'] == 'run' for r in rows)} of your runs")
    return _save(fig, args.out)
