"""The `tftransfer` command."""

import argparse
import sys


class _UsageError(Exception):
    pass


def _cmd_backbones(args):
    import tftransfer

    if args.action == "list":
        for name in tftransfer.list_backbones():
            print(name)
        return 0
    if not args.name:
        raise _UsageError("backbones info: name a backbone, e.g. `tftransfer backbones info ResNet50`")
    try:
        info = tftransfer.backbone_info(args.name)
    except ValueError as error:
        raise _UsageError(str(error)) from None
    print(f"{info.name} ({info.source}, family {info.family})")
    print(f"  preprocessing: {info.preprocessing}")
    print(f"  default size: {info.default_size}, smallest: {info.min_size}")
    print(f"  feature dimension: {info.feature_dim}")
    print(f"  blocks ({info.num_blocks}, bottom to top): {', '.join(info.blocks)}")
    return 0


def distributed_tuning_env(role, oracle, tuner_id=None):
    """The keras-tuner environment variables for `--role chief|worker --oracle host:port`."""
    if role is None:
        return {}
    if not oracle or ":" not in oracle:
        raise _UsageError("--oracle: expected host:port of the chief, e.g. 10.0.0.1:8000")
    host, port = oracle.rsplit(":", 1)
    if not port.isdigit():
        raise _UsageError(f"--oracle: the port must be a number; received {port!r}")
    if role == "chief":
        tuner_id = "chief"
    elif not tuner_id or tuner_id == "chief":
        raise _UsageError("--tuner-id: a worker needs its own id, e.g. --tuner-id worker0")
    return {"KERASTUNER_TUNER_ID": tuner_id, "KERASTUNER_ORACLE_IP": host,
            "KERASTUNER_ORACLE_PORT": port}


def _cmd_tune(args):
    import os

    import tftransfer

    env = distributed_tuning_env(args.role, args.oracle, args.tuner_id)
    if not os.path.isdir(args.data):
        raise _UsageError(f"data: {args.data!r} does not exist or is not a folder")
    try:
        tftransfer.backbones.get_backbone_spec(args.backbone) if not args.backbone.startswith(
            "tfhub:") else None
        data = tftransfer.data.from_directory(args.data, args.image_size,
                                              validation_split=args.validation_split,
                                              batch_size=args.batch_size)
    except ValueError as error:
        raise _UsageError(str(error)) from None
    os.environ.update(env)
    result = tftransfer.tune(args.backbone, data, max_trials=args.max_trials, tuner=args.tuner,
                             directory=args.directory, project_name=args.project_name,
                             head_epochs=args.head_epochs,
                             fine_tune_epochs=args.fine_tune_epochs,
                             weights=None if args.weights == "none" else args.weights)
    print(f"trials finished here: {len(result.trials)}")
    if result.best_hyperparameters:
        print(f"best hyperparameters: {result.best_hyperparameters}")
    return 0


def _cmd_demo(args):
    from tftransfer.demo import run_demo

    run_demo(args.output_dir)
    return 0


def build_parser():
    parser = argparse.ArgumentParser(
        prog="tftransfer", description="Transfer learning on Keras 3 and TensorFlow.")
    commands = parser.add_subparsers(dest="command", required=True)

    backbones = commands.add_parser("backbones", help="list backbones or describe one")
    backbones.add_argument("action", choices=("list", "info"))
    backbones.add_argument("name", nargs="?", help="a backbone name, for `info`")
    backbones.set_defaults(handler=_cmd_backbones)

    tune = commands.add_parser(
        "tune", help="search freeze depth and learning rates (keras-tuner)",
        description="Search unfreeze depth, learning rates and dropout over a folder of class "
                    "folders. Across machines: start one chief (--role chief --oracle "
                    "HOST:PORT) and any number of workers (--role worker --oracle HOST:PORT "
                    "--tuner-id worker0), all with the same --directory on shared storage.")
    tune.add_argument("data", help="a folder with one sub-folder of images per class")
    tune.add_argument("--backbone", default="MobileNetV2")
    tune.add_argument("--image-size", type=int, default=224)
    tune.add_argument("--weights", default="imagenet", help="imagenet, none, or a file")
    tune.add_argument("--max-trials", type=int, default=10)
    tune.add_argument("--tuner", default="random", choices=("random", "bayesian", "hyperband"))
    tune.add_argument("--head-epochs", type=int, default=3)
    tune.add_argument("--fine-tune-epochs", type=int, default=3)
    tune.add_argument("--validation-split", type=float, default=0.2)
    tune.add_argument("--batch-size", type=int, default=32)
    tune.add_argument("--directory", default="tuning")
    tune.add_argument("--project-name", default=None)
    tune.add_argument("--role", choices=("chief", "worker"), default=None,
                      help="distributed search: this process's role")
    tune.add_argument("--oracle", default=None, help="HOST:PORT of the chief's oracle")
    tune.add_argument("--tuner-id", default=None, help="a worker's id (chief is 'chief')")
    tune.set_defaults(handler=_cmd_tune)

    demo = commands.add_parser("demo", help="run the offline demo")
    demo.add_argument("--output-dir", default="demo_output")
    demo.set_defaults(handler=_cmd_demo)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except _UsageError as error:
        print(f"tftransfer: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
