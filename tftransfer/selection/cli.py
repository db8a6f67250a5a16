"""`tftransfer rank <data> --backbones a,b,c`: the ranking from the command line.

`add_rank_parser(subparsers)` adds the `rank` subcommand to the `tftransfer`
parser; `rank_command(args)` runs it (its `handler`). A user mistake prints
one line, `tftransfer: error: ...`, and returns 2, as the other commands do.
"""

import json
import os
import sys

TEXT_SUFFIXES = (".txt",)


def add_rank_parser(subparsers, *, parents=()):
    """Adds `rank` to the `tftransfer` command's subparsers.

    Args:
        subparsers: the object `ArgumentParser.add_subparsers()` returned.
        parents: list of parsers whose flags `rank` also takes (the
            command's `--verbose`). Defaults to `()`.

    Returns:
        The `rank` parser; its `handler` default is `rank_command`.

    Example:

    >>> import argparse
    >>> from tftransfer.selection.cli import add_rank_parser
    >>> parser = argparse.ArgumentParser(prog="tftransfer")
    >>> _ = add_rank_parser(parser.add_subparsers(dest="command"))
    >>> args = parser.parse_args(["rank", "photos/", "--backbones", "FashionCNN,MobileNetV2"])
    >>> args.backbones, args.method, args.handler.__name__
    ('FashionCNN,MobileNetV2', 'logme', 'rank_command')
    """
    rank = subparsers.add_parser(
        "rank", parents=list(parents),
        help="rank candidate backbones on your data before training (LogME, kNN, probe)",
        description="Score each candidate backbone's frozen features against the labels of a "
                    "folder of class folders (images, or .txt files with --text), without "
                    "training: LogME by default. Prints a table, best first.")
    rank.add_argument("data", help="a folder of class folders (images or .txt files)")
    rank.add_argument("--backbones", required=True,
                      help="comma-separated candidates: registry names, kerashub:<preset>, "
                           "or text checkpoints such as all-MiniLM-L6-v2 (default: none, "
                           "required)")
    rank.add_argument("--method", default="logme", choices=("logme", "knn", "probe"),
                      help="the score: LogME, leave-one-out kNN accuracy or a linear probe")
    rank.add_argument("--image-size", type=int,
                      help="default: the first candidate's own size (224 if unknown)")
    rank.add_argument("--weights", default="pretrained",
                      help="pretrained (default), none (random initialization) or a file")
    rank.add_argument("--batch-size", type=int, default=32,
                      help="images or texts a batch when computing features")
    rank.add_argument("--text", action="store_true", default=None,
                      help="the folder holds texts (default: when every file is .txt)")
    rank.add_argument("--plot", help="save a bar chart of the scores here (.png) "
                                     "(default: none)")
    rank.add_argument("--json", help="save the ranking here (.json) (default: none)")
    rank.set_defaults(handler=rank_command)
    return rank


def _is_text_folder(path):
    names = [name for _, _, files in os.walk(path) for name in files if not name.startswith(".")]
    return bool(names) and all(name.lower().endswith(TEXT_SUFFIXES) for name in names)


def _default_size(backbone):
    from tftransfer.backbones.registry import get_backbone_spec

    try:
        return get_backbone_spec(backbone).default_size
    except ValueError:
        return 224


def rank_command(args):
    """Runs `tftransfer rank`; returns the exit code (0, or 2 for a user mistake).

    Args:
        args: `argparse.Namespace` from the `rank` parser.

    Returns:
        int.
    """
    try:
        return _rank(args)
    except (ValueError, TypeError) as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else "usage error"
        print(f"tftransfer: error: {message}", file=sys.stderr)
        return 2


def _rank(args):
    import tftransfer
    from tftransfer.selection import rank_backbones

    candidates = [name.strip() for name in args.backbones.split(",") if name.strip()]
    if not candidates:
        raise ValueError("--backbones: expected comma-separated backbone names.")
    if not os.path.isdir(args.data):
        raise ValueError(f"data: {args.data!r} does not exist or is not a folder of class "
                         "folders.")
    text = _is_text_folder(args.data) if args.text is None else args.text
    weights = None if str(args.weights).lower() == "none" else args.weights
    size = None
    if text:
        data = tftransfer.data.from_text_directory(args.data, batch_size=args.batch_size,
                                                   validation_split=0.0)
    else:
        size = args.image_size or _default_size(candidates[0])
        data = tftransfer.data.from_directory(args.data, size, batch_size=args.batch_size,
                                              validation_split=0.0, cache=None)
    result = rank_backbones(data, candidates, method=args.method, image_size=size,
                            weights=weights, verbose=1, keep_features=False)
    print(f"best: {result.best}")
    if args.plot:
        result.plot(args.plot)
        print(f"saved {args.plot}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result.to_dict(), handle, indent=2)
        print(f"saved {args.json}")
    return 0
