"""The `pyconv` command: train the seed's networks on MNIST, evaluate saved models."""
import argparse
import json
import sys

from .errors import WriteError
from .train import RECIPES, TrainConfig, TrainingDiverged, train


def _positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _positive_float(text):
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def build_parser():
    p = argparse.ArgumentParser(prog="pyconv", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train a network on MNIST and print its test accuracy")
    t.add_argument("--model", choices=sorted(RECIPES), default="tutorial",
                   help="tutorial (default): the seed's TensorFlow CNN; grokking: its NumPy CNN")
    t.add_argument("--data-dir", help="folder with the four MNIST IDX files (else "
                   "$PYCONV_DATA_DIR, else the cache, else a download)")
    t.add_argument("--steps", type=_positive_int, help="training steps (default: the "
                   "model's published budget: tutorial 20000, grokking 2100)")
    t.add_argument("--batch-size", type=_positive_int, help="default: tutorial 50, grokking 128")
    t.add_argument("--lr", type=_positive_float, help="learning rate (default: tutorial 1e-4 "
                   "Adam, grokking 1.0 SGD)")
    t.add_argument("--seed", type=int, default=0,
                   help="seed of initialisation, dropout and data order (default: 0)")
    t.add_argument("--threads", type=_positive_int, help="convcore threads (default: "
                   "OMP_NUM_THREADS, else all cores)")
    t.add_argument("--checkpoint", metavar="PATH", help="save a checkpoint here periodically "
                   "and at the end")
    t.add_argument("--checkpoint-every", type=_positive_int, default=1000, metavar="N",
                   help="steps between checkpoints (default: 1000)")
    t.add_argument("--resume", action="store_true", help="continue from --checkpoint")
    t.add_argument("--metrics", metavar="PATH", help="write a JSON file of the run's figures")
    t.add_argument("--eval-every", type=_positive_int, default=1000, metavar="N",
                   help="steps between validation accuracy reports; the test "
                   "set is evaluated once, at the end (default: 1000)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar (there is "
                   "none when stderr is not a terminal: one line per evaluation instead)")
    e = sub.add_parser("evaluate", help="test accuracy of a saved model or checkpoint")
    e.add_argument("path", help="a file written by pyconv.save or a --checkpoint")
    e.add_argument("--data-dir", help="as for train")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        if args.command == "evaluate":
            return _evaluate(args)
        cfg = TrainConfig(model=args.model, steps=args.steps, batch_size=args.batch_size,
                          lr=args.lr, seed=args.seed, threads=args.threads,
                          data_dir=args.data_dir, checkpoint=args.checkpoint,
                          checkpoint_every=args.checkpoint_every, resume=args.resume,
                          metrics=args.metrics, eval_every=args.eval_every,
                          progress=not args.no_progress)
        m = train(cfg)
    except KeyboardInterrupt:
        return 130
    except TrainingDiverged as e:
        print(f"pyconv: {e}", file=sys.stderr)
        return 3
    except WriteError as e:
        print(f"pyconv: error: {e}", file=sys.stderr)
        return 4
    except (ValueError, FileNotFoundError) as e:
        print(f"pyconv: error: {e}", file=sys.stderr)
        return 2
    print(f"test accuracy: {m['test_accuracy']:.4f} ({m['model']}, {m['steps']} steps, "
          f"batch {m['batch_size']}, seed {m['seed']}, {m['threads']} threads, "
          f"{m['train_seconds']:.1f} s, {m['images_per_second']:.0f} images/s)")
    return 0


def _evaluate(args):
    from . import data as mnist
    from .serialize import load
    model = load(args.path)
    _, (x, y) = mnist.load_mnist(args.data_dir)
    acc = model.accuracy(mnist.to_float(x), y.astype(int))
    print(json.dumps({"path": args.path, "model": model.name, "test_accuracy": acc}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
