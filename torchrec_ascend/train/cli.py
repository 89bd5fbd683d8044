"""Command line: ``python -m torchrec_ascend.train`` (or ``torchrec-ascend-train``)."""

import argparse
import dataclasses
import logging
import os
import sys
from pathlib import Path

from torchrec_ascend.data import available_datasets, leave_one_out, load_dataset
from torchrec_ascend.models import PRESETS, get_preset
from torchrec_ascend.train.loop import RunSpec, describe, train

logger = logging.getLogger("torchrec_ascend.train")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m torchrec_ascend.train",
        description="Train an HSTU or SASRec retrieval model on a bundled dataset.",
    )
    p.add_argument("--dataset", default="beauty", choices=available_datasets())
    p.add_argument("--model", default="hstu", choices=["hstu", "sasrec"])
    p.add_argument(
        "--config",
        default=None,
        choices=sorted(PRESETS),
        help="named preset (default: the dataset's own preset, else 'beauty')",
    )
    p.add_argument(
        "--epochs", type=int, default=None, help="override the preset's epochs"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output-dir", type=Path, default=None)
    p.add_argument("--resume", action="store_true", help="continue from DIR/last.pt")
    p.add_argument(
        "--data-root", type=Path, default=None, help="folder with the datasets"
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument(
        "--balance",
        default="global",
        choices=["fixed", "global", "token_budget"],
        help="under torchrun: how samples are spread over ranks (default: global)",
    )
    p.add_argument(
        "--partition-method",
        default="lpt",
        choices=["lpt", "kk"],
        help="cost partitioner of --balance global",
    )
    p.add_argument(
        "--pipeline",
        default="plain",
        choices=["plain", "sync", "semi-async"],
        help="train loop: plain, or torchrec_ascend.pipeline in sync / semi-async "
        "mode (stage fractions go to metrics.json train.pipeline)",
    )
    return p


def _data_parallel_strategy(args):
    """A DataParallelStrategy when started by torchrun with WORLD_SIZE > 1."""
    from torchrec_ascend.train import distributed

    if not distributed.launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) < 2:
        return None
    rank, world = distributed.init_process_group_from_env("cpu")
    logger.info("rank %d of %d, balance %s", rank, world, args.balance)
    return distributed.DataParallelStrategy(args.balance, args.partition_method)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    preset = args.config or (args.dataset if args.dataset in PRESETS else "beauty")
    config = get_preset(preset)
    config = dataclasses.replace(
        config, model=dataclasses.replace(config.model, model=args.model)
    )
    if args.epochs is not None:
        config = dataclasses.replace(
            config, train=dataclasses.replace(config.train, epochs=args.epochs)
        )
    output_dir = (
        args.output_dir or Path("runs") / f"{args.dataset}-{args.model}-{preset}"
    )

    dataset = load_dataset(args.dataset, root=args.data_root)
    split = leave_one_out(dataset)
    logger.info(
        "%s: %d users, %d items, %d interactions; preset %s",
        args.dataset,
        dataset.num_users,
        dataset.num_items,
        dataset.num_interactions,
        preset,
    )
    strategy = _data_parallel_strategy(args)
    spec = RunSpec(
        dataset=args.dataset,
        split=split,
        config=config,
        seed=args.seed,
        output_dir=output_dir,
        resume=args.resume,
        progress=not args.no_progress and (strategy is None or strategy.is_main),
        pipeline=args.pipeline,
    )
    try:
        metrics = train(spec, strategy)
    except KeyboardInterrupt:
        return 130
    if strategy is None or strategy.is_main:
        print(describe(metrics, output_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
