"""``dvn train``, ``dvn eval``, ``dvn inspect``, ``dvn export``."""

from __future__ import annotations

import argparse
import json
from typing import Any

EXAMPLES_TRAIN = """examples:
  dvn train --preset demo --out model_store/checkpoints/demo
  dvn train --preset tiny --out /tmp/tiny --baseline
  dvn train --preset demo --out model_store/checkpoints/demo --baseline-only
  dvn train --preset standard --out model_store/checkpoints/standard --threads 1
  dvn train --config my-tasks.toml --out runs/mine
  dvn train --preset cifar-j1 --data-dir ~/data --out runs/cifar   # needs CIFAR on disk, a GPU
"""


def register(sub: Any) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser(
        "train",
        help="train a DVN (summed loss of every level of every task)",
        description="Train a DVN and write its checkpoint.",
        epilog=EXAMPLES_TRAIN,
        formatter_class=fmt,
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--preset", help="tiny, demo, standard, standard-tiny or cifar-j1")
    src.add_argument("--config", help="a .json or .toml training config (see docs/training.md)")
    p.add_argument("--out", required=True, help="checkpoint directory to write")
    p.add_argument("--epochs", type=int, help="override the config's epochs")
    p.add_argument("--data-dir", help="where relative task paths are looked up")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    p.add_argument(
        "--baseline",
        action="store_true",
        help="also train a separate network of the same size for every (task, level) and "
        "write the comparison (baseline.md, baseline.json, baseline.png) into --out",
    )
    p.add_argument(
        "--baseline-only",
        action="store_true",
        help="train only the separate networks, against the checkpoint already at --out",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--threads", type=int, help="torch intra-op threads (default: torch's; 1 on a busy machine)"
    )
    p.set_defaults(handler=_train)

    p = sub.add_parser(
        "eval",
        help="re-measure every (task, level)'s held-out accuracy",
        epilog="example:\n  dvn eval model_store/checkpoints/demo",
        formatter_class=fmt,
    )
    p.add_argument("checkpoint")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=_eval)

    p = sub.add_parser(
        "inspect",
        help="print tasks, levels, units, costs and accuracy as a table",
        epilog="example:\n  dvn inspect model_store/checkpoints/demo",
        formatter_class=fmt,
    )
    p.add_argument("checkpoint")
    p.add_argument("--json", action="store_true", help="print the manifest")
    p.set_defaults(handler=_inspect)

    p = sub.add_parser(
        "export",
        help="write one (task, level) as a standalone checkpoint",
        epilog="example:\n  dvn export model_store/checkpoints/demo --task digits --level 2 --out /tmp/digits-l2",
        formatter_class=fmt,
    )
    p.add_argument("checkpoint")
    p.add_argument("--task", required=True)
    p.add_argument("--level", type=int, required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(handler=_export)


def _train(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from model_store.baseline import train_baselines
    from model_store.presets import TrainConfig, get_preset, load_config
    from model_store.report import format_levels
    from model_store.train import train

    if args.threads is not None:
        import torch

        torch.set_num_threads(max(1, args.threads))
    config = get_preset(args.preset) if args.preset else load_config(args.config)
    overrides: dict[str, Any] = {}
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    if args.data_dir is not None:
        overrides["data_dir"] = args.data_dir
    if overrides:
        # Validated like the config itself (model_copy would not): --epochs 0 must not
        # silently write an untrained checkpoint.
        try:
            config = TrainConfig.model_validate({**config.model_dump(), **overrides})
        except ValidationError as e:
            problems = "; ".join(
                f"--{str(err['loc'][0]).replace('_', '-')}: {err['msg']}" for err in e.errors()
            )
            raise ValueError(f"invalid option: {problems}") from e
    if not args.baseline_only:
        result = train(config, args.out, device=args.device, progress=not args.quiet)
        print(f"wrote {result.path} in {result.seconds:.0f} s")
        print(format_levels(result.manifest))
    if args.baseline or args.baseline_only:
        report = train_baselines(args.out, config, device=args.device, progress=not args.quiet)
        print(report.read_text())
    return 0


def _eval(args: argparse.Namespace) -> int:
    from model_store.checkpoint import load
    from model_store.report import remeasure
    from model_store.train import pick_device

    dev = pick_device(args.device)
    ckpt = load(args.checkpoint, device=dev)
    rows = remeasure(ckpt, dev)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(f"{'task':<12}{'level':>6}{'stored':>9}{'measured':>10}  data")
        for r in rows:
            stored = "-" if r["stored"] is None else f"{r['stored']:.4f}"
            print(f"{r['task']:<12}{r['level']:>6}{stored:>9}{r['measured']:>10.4f}  {r['data']}")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from model_store.manifest import read_manifest
    from model_store.report import format_levels

    manifest = read_manifest(args.checkpoint)
    if args.json:
        print(json.dumps(manifest.model_dump(mode="json"), indent=2))
    else:
        print(format_levels(manifest))
    return 0


def _export(args: argparse.Namespace) -> int:
    from model_store.checkpoint import load
    from model_store.export import export_level

    ckpt = load(args.checkpoint)
    manifest = export_level(ckpt, args.task, args.level, args.out)
    entry = manifest.tasks[0].levels[0]
    print(
        f"wrote {args.out}: task {args.task} level {args.level} "
        f"({entry.params:,} params, {entry.param_bytes:,} bytes)"
    )
    return 0
