"""The `pyconv` command: train a network (built in, or a network file) on a data
set (registered, or your own), evaluate it, predict with it, summarise it,
look into it (report), export it as ONNX."""
import argparse
import json
import os
import sys

from convcore.slices import MAX_SLICES

from ..data import datasets
from ..data.images import read_image
from ..errors import DataError, MissingExtra, WriteError
from ..extras import require
from ..io import load, load_network, onnx
from ..model import SLICES
from ..models import MODELS
from ..precision import PRECISIONS
from ..precision import checked as checked_precision
from ..train import TrainingDiverged, distributed
from ..version import __version__
from ..viz import plot, report
from .runs import OPTIMIZER_NAMES, TrainConfig, train


def _option(kind, expected, ok):
    """An argparse type: text read as kind (int or float) for which ok holds,
    else "must be {expected}, got {text}" (a word too: never a traceback)."""
    def convert(text):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not ok(value):
            raise argparse.ArgumentTypeError(f"must be {expected}, got {text!r}")
        return value
    return convert


_positive_int = _option(int, "a whole number >= 1", lambda v: v >= 1)
_non_negative_int = _option(int, "a whole number >= 0", lambda v: v >= 0)
_positive_float = _option(float, "a number > 0", lambda v: v > 0)
_fraction = _option(float, "a number in (0, 1)", lambda v: 0 < v < 1)
_non_negative_float = _option(float, "a number >= 0", lambda v: v >= 0)
_smoothing = _option(float, "a number in [0, 1)", lambda v: 0 <= v < 1)
_momentum = _smoothing
_slices = _option(int, f"a number of slices from 1 to {MAX_SLICES}",
                  lambda v: 1 <= v <= MAX_SLICES)


def _data_options(p):
    p.add_argument("--dataset", metavar="NAME|PATH",
                   help="a registered data set (mnist, fashion-mnist), a folder of IDX files, "
                   "an .npz, a folder of .npy files, or a folder of class folders of images "
                   "(default: mnist)")
    p.add_argument("--data-dir", help="where a registered data set's files are (else "
                   "$PYCONV_DATA_DIR, else the cache, else a download)")
    p.add_argument("--image-size", type=_positive_int, nargs=2, metavar=("H", "W"),
                   help="resize an image folder's images to H x W")
    p.add_argument("--test-split", type=_fraction, metavar="F",
                   help="an image folder without train/ and test/: hold out this fraction "
                   "of each class for the test set (default 0.2)")


def _recipe_options(t):
    """How a run learns: the rate, the optimiser and its settings, the schedule,
    label smoothing (each defaulting to the model's recipe)."""
    t.add_argument("--lr", type=_positive_float, help="learning rate (default: tutorial 1e-4 "
                   "Adam, grokking 1.0 SGD, fast 0.01 Adam with betas 0.7 and 0.9, resnet8 0.01 "
                   "AdamW with weight decay 5e-4, else 1e-3 Adam)")
    t.add_argument("--optimizer", choices=tuple(OPTIMIZER_NAMES), help="the optimiser "
                   "(default: the model's recipe: tutorial and fast adam, grokking sgd, resnet8 "
                   "adamw; else adam); a recipe's own settings (fast's betas, resnet8's weight "
                   "decay) go with its optimiser")
    t.add_argument("--weight-decay", type=_non_negative_float, metavar="W", help="adamw: "
                   "decoupled weight decay, as PyTorch's AdamW (default 0.01; resnet8 5e-4); "
                   "sgd: W * weights added to the gradient (default 0)")
    t.add_argument("--momentum", type=_momentum, metavar="M", help="sgd: momentum, in [0, 1) "
                   "(default 0)")
    t.add_argument("--nesterov", action="store_true", help="sgd: Nesterov momentum (needs "
                   "--momentum > 0)")
    t.add_argument("--schedule", choices=("constant", "step", "cosine", "onecycle"),
                   help="learning-rate schedule (default: fast and resnet8 onecycle, else "
                   "constant; "
                   "onecycle: PyTorch's OneCycleLR, up to --lr over 30%% of the run, then "
                   "down; step: x0.1 every third of the run; cosine: "
                   "down to 0)")
    t.add_argument("--label-smoothing", type=_smoothing, metavar="E", help="spread E of each "
                   "target over all classes, as PyTorch's (default: fast and resnet8 0.1, "
                   "else 0)")


def _train_parser(sub):
    t = sub.add_parser("train", help="train a network and print its test accuracy")
    t.add_argument("--model", default="tutorial", metavar="NAME|FILE",
                   help=f"a built-in network ({', '.join(sorted(MODELS))}; default tutorial, "
                   "the TensorFlow tutorial's CNN) or a network file (.json or .toml)")
    _data_options(t)
    t.add_argument("--steps", type=_positive_int, help="training steps (default: the "
                   "model's published budget: tutorial 20000, grokking 2100, fast 1.5 epochs, "
                   "resnet8 20 epochs; else 2000)")
    t.add_argument("--epochs", type=_positive_float, help="passes over the training set "
                   "(instead of --steps)")
    t.add_argument("--batch-size", type=_positive_int, help="the (global) batch: under "
                   "mpiexec, split among the processes (default: tutorial 50, grokking 128, "
                   "fast and resnet8 128, else 50)")
    _recipe_options(t)
    t.add_argument("--augment-shift", type=_non_negative_int, metavar="N",
                   help="augment: translate each training image by up to N pixels (zero "
                   "border), seeded; resumes bit for bit (default: resnet8 2, else 0: off)")
    t.add_argument("--augment-flip", action="store_true", help="augment: mirror half of the "
                   "training images left to right (not for digits)")
    t.add_argument("--validation-split", type=_fraction, metavar="F", help="fraction of the "
                   "training images held out for validation (default: the recipe's twelfth; "
                   "fast and resnet8: none)")
    t.add_argument("--seed", type=int, default=0,
                   help="seed of initialisation, dropout and data order (default: 0)")
    t.add_argument("--slices", type=_slices, metavar="S", default=SLICES,
                   help="cut each batch's gradient sums into S slices added in a fixed tree: "
                   "the same weights, bit for bit, on 1 process or any power of two of them "
                   "that divides S, e.g. 16 (costs 5-14%% of a step); default 1: one plain "
                   "sum, the fastest")
    _precision_option(t, None, "fp32; a resumed run keeps its checkpoint's")
    t.add_argument("--threads", type=_positive_int, help="convcore threads, per process "
                   "(default: OMP_NUM_THREADS, else the cores shared among the machine's "
                   "processes)")
    t.add_argument("--checkpoint", metavar="PATH", help="save a checkpoint here periodically "
                   "and at the end (it is also a model file for evaluate and predict)")
    t.add_argument("--checkpoint-every", type=_positive_int, default=1000, metavar="N",
                   help="steps between checkpoints (default: 1000)")
    t.add_argument("--resume", action="store_true", help="continue from --checkpoint")
    t.add_argument("--metrics", metavar="PATH", help="write a JSON file of the run's figures "
                   "and its history (for pyconv report)")
    t.add_argument("--tensorboard", metavar="DIR", help="write each evaluation's figures as "
                   "TensorBoard scalars in DIR (needs pyconv[plot])")
    t.add_argument("--eval-every", type=_positive_int, default=1000, metavar="N",
                   help="steps between validation accuracy reports; the test set is "
                   "evaluated once, at the end (default: 1000)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar (there is "
                   "none when stderr is not a terminal: one line per evaluation instead)")


def _precision_option(parser, default, said):
    parser.add_argument("--precision", choices=PRECISIONS, default=default,
                        help="how the convolutions and dense layers multiply: fp32; bf16 "
                        "(bfloat16 operands, float32 sums: needs a CPU with AMX-BF16 or "
                        "AVX512-BF16); bf16-emulated (the same arithmetic on any CPU, slower "
                        f"than fp32). The weights stay float32 (default: {said})")


def build_parser():
    p = argparse.ArgumentParser(prog="pyconv", description=__doc__)
    p.add_argument("--version", action="version", version=f"pyconv {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    _train_parser(sub)
    e = sub.add_parser("evaluate", help="loss and accuracy of a saved model on a test set")
    e.add_argument("path", help="a file written by pyconv.save or a --checkpoint")
    _data_options(e)
    _precision_option(e, "fp32", "fp32")
    r = sub.add_parser("predict", help="the class of each image file, with its probability")
    r.add_argument("path", help="a saved model or checkpoint")
    r.add_argument("images", nargs="+", help="PNG/JPEG files, or .npy arrays of images")
    _precision_option(r, "fp32", "fp32")
    s = sub.add_parser("summary", help="the layers, output shapes and parameter counts")
    s.add_argument("model", help="a saved model, a network file, or a built-in name")
    rp = sub.add_parser("report", help="an HTML page of the kernels, feature maps, training "
                        "curves, confusion matrix and mistakes (needs pyconv[plot])")
    rp.add_argument("path", help="a saved model or checkpoint")
    rp.add_argument("--metrics", metavar="RUN.json", help="the run's --metrics file: its curves")
    rp.add_argument("--out", default="report", metavar="DIR",
                    help="the folder to write index.html and its PNGs to (default: report)")
    rp.add_argument("--image", type=int, default=0, metavar="N",
                    help="the test image whose feature maps are shown (default 0)")
    _data_options(rp)
    x = sub.add_parser("export", help="write a saved model as ONNX (needs pyconv[onnx])")
    x.add_argument("path", help="a saved model or checkpoint")
    x.add_argument("out", help="the .onnx file to write")
    x.add_argument("--opset", type=_positive_int, default=None,
                   help="the ONNX opset to write (default 17)")
    x.add_argument("--input-type", choices=("uint8", "float32"), default=None,
                   help="the input the file takes: uint8 pixels, divided by the model's "
                   "input divisor in the graph (the default for images), or float32 images")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        return _ended(130)
    except TrainingDiverged as e:
        return _ended(3, f"pyconv: {e} (pyconv train --lr)")
    except WriteError as e:
        return _ended(4, f"pyconv: error: {e}")
    except (ValueError, FileNotFoundError, MissingExtra) as e:   # DataError, ModelFileError, ...
        return _ended(2, f"pyconv: error: {e}")
    except BaseException as e:
        _ended(None, f"pyconv: {type(e).__name__}: {e}")
        raise


def _ended(code, message=None):
    """Print why (naming the rank when there are several); with several
    processes, end them all (MPI_Abort) so that none waits for this one."""
    world = distributed.current()
    if message:
        prefix = f"[rank {world.rank}] " if world.size > 1 else ""
        print(prefix + message, file=sys.stderr)
    if world.size > 1 and code is not None:
        world.abort(code)
    return code


def _train(args):
    cfg = TrainConfig(model=args.model, dataset=args.dataset, steps=args.steps,
                      epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                      optimizer=args.optimizer, weight_decay=args.weight_decay,
                      momentum=args.momentum, nesterov=args.nesterov,
                      schedule=args.schedule, label_smoothing=args.label_smoothing,
                      augment_shift=args.augment_shift, augment_flip=args.augment_flip,
                      validation_split=args.validation_split,
                      image_size=args.image_size, test_split=args.test_split, seed=args.seed,
                      slices=args.slices, precision=args.precision, threads=args.threads,
                      data_dir=args.data_dir,
                      checkpoint=args.checkpoint, checkpoint_every=args.checkpoint_every,
                      resume=args.resume,
                      metrics=args.metrics, tensorboard=args.tensorboard,
                      eval_every=args.eval_every,
                      progress=not args.no_progress)
    m = train(cfg)
    if m["processes"] > 1 and distributed.world().rank:
        return 0
    test = "none" if m["test_accuracy"] is None else f"{m['test_accuracy']:.4f}"
    data = "" if m["dataset"] == "mnist" else f"{m['dataset']}, "
    precision = "" if m["precision"] == "fp32" else f"{m['precision']}, "
    print(f"test accuracy: {test} ({m['model']}, {data}{m['steps']} steps, "
          f"batch {m['batch_size']}, seed {m['seed']}, {precision}{m['threads']} threads, "
          f"{m['train_seconds']:.1f} s, {m['images_per_second']:.0f} images/s)")
    return 0


def _loaded(args):
    """The saved model, to run in --precision (checked before the file is read)."""
    checked_precision("--precision", args.precision)
    return load(args.path).set_precision(args.precision)


def _evaluate(args):
    model = _loaded(args)
    ds = _evaluation_data(model, args)
    result = model.evaluate(ds.x_test, ds.y_test)
    print(json.dumps({"path": args.path, "model": model.name, "dataset": ds.name,
                      "test_images": len(ds.y_test), "test_loss": result["loss"],
                      "test_accuracy": result["accuracy"], "precision": model.precision}))
    return 0


def _image_size(model, dataset):
    """An image folder is read at the model's own input size."""
    if dataset and os.path.isdir(dataset) and model.input_shape:
        return model.input_shape[:2]
    return None


def _predict(args):
    import numpy as np

    model = _loaded(args)
    names = model.class_names or [str(i) for i in range(model.output_shape[0])]
    for path in args.images:
        if path.endswith(".npy"):
            try:
                x = np.load(path, allow_pickle=False)
            except (OSError, ValueError) as e:
                raise DataError(f"{path}: not a readable .npy ({e})") from None
            one = x.shape in (model.input_shape, model.input_shape[:2] if
                              model.input_shape[-1] == 1 else None)
            x = x[None] if one else x          # one image, or (N, H, W[, C]) of them
        else:
            x = read_image(path, model.input_shape[:2], model.input_shape[2])[None]
        classes, probs = model.predict_classes(x)
        for i, (c, pr) in enumerate(zip(classes, probs)):
            label = path if len(classes) == 1 else f"{path}[{i}]"
            print(f"{label}: {names[c]} ({pr:.3f})")
    return 0


def _summary(args):
    if args.model in MODELS:
        model = MODELS[args.model]()
    elif args.model.endswith((".json", ".toml")):
        model = load_network(args.model)
        if not model.built:
            raise ValueError(f"{args.model}: the network file gives no input_shape, so its "
                             "shapes cannot be worked out; add \"input_shape\": [H, W, C]")
    else:
        model = load(args.model)
    print(model.summary())
    return 0


def _evaluation_data(model, args):
    return datasets.load(args.dataset or "mnist", data_dir=args.data_dir,
                         image_size=args.image_size or _image_size(model, args.dataset),
                         test_split=args.test_split)


def _report(args):
    require("plot", "pyconv report")
    model = load(args.path)
    ds = _evaluation_data(model, args)
    path = report.write(model, args.out, metrics=args.metrics, test=(ds.x_test, ds.y_test),
                        image_index=args.image)
    pngs = sorted(f for f in os.listdir(args.out) if f.endswith(".png"))
    grids = len(plot.conv_layers(model))
    print(f"wrote {path}: {grids} kernel grid{'s' * (grids != 1)}, feature maps, confusion "
          f"matrix, mistakes{', training curves' if args.metrics else ''} ({len(pngs)} PNGs, "
          f"{len(ds.y_test)} test images of {ds.name})")
    return 0


def _export(args):
    if not args.out.endswith(".onnx"):
        raise ValueError(f"export: the output file must end in .onnx, got {args.out!r}")
    model = load(args.path)
    proto = onnx.export(model, args.out, opset=args.opset or onnx.DEFAULT_OPSET,
                        input_type=args.input_type)
    graph = proto.graph
    dims = [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    kind = {p.key: p.value for p in proto.metadata_props}["pyconv.input_type"]
    print(f"wrote {args.out}: opset {proto.opset_import[0].version}, {len(graph.node)} nodes, "
          f"input {graph.input[0].name!r} {kind} ({', '.join(map(str, dims))}), output "
          f"{graph.output[0].name!r} (N, {model.output_shape[0]}), "
          f"{os.path.getsize(args.out) / 1e6:.1f} MB")
    return 0


COMMANDS = {"train": _train, "evaluate": _evaluate, "predict": _predict, "summary": _summary,
            "export": _export, "report": _report}


if __name__ == "__main__":
    sys.exit(main())
