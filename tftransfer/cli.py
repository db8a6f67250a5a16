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
