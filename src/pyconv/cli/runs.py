"""What `pyconv train` trains on and with: the data set split as the recipe
says, and the model (a built-in network or a network file) with its optimiser."""
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass

import convcore

from ..data import Augment, datasets
from ..errors import ShapeError, WriteError
from ..io.files import atomic_write
from ..io.network_files import load_network
from ..model import SLICES
from ..models import MODELS
from ..optim import OPTIMIZERS
from ..precision import checked as checked_precision
from ..train import distributed
from ..train.callbacks import Checkpoint, Evaluate, LearningRateSchedule, ProgressBar, TensorBoard
from ..train.loop import Trainer, log

# Each model's published recipe: the TensorFlow tutorial's run and Grokking Deep
# Learning's (ch. 10) run; and `fast`'s, chosen for the time to 99.2% on MNIST.
# The validation set is the first (or last) twelfth of the training file:
# MNIST's 5,000 of 60,000 (any other count scales, e.g. the tests' sample).
RECIPES = {
    # 20,000 steps of 50 on 55,000 images (the first 5,000 held out), Adam 1e-4
    "tutorial": dict(steps=20000, batch_size=50, lr=1e-4, optimizer="adam",
                     validation="first", train_limit=None, shuffle=True),
    # 300 passes over the first 1,000 images in batches of 128 (7 full batches a
    # pass, in order, as Grokking Deep Learning's loop does), plain SGD; validation: the last 5,000
    "grokking": dict(steps=2100, batch_size=128, lr=1.0, optimizer="sgd",
                     validation="last", train_limit=1000, shuffle=False),
    # 1.5 passes over all the training images (none held out, as the public
    # PyTorch recipe it beats), batch 128, Adam 0.01 with betas (0.7, 0.9), the
    # one-cycle schedule, label smoothing 0.1
    "fast": dict(epochs=1.5, batch_size=128, lr=0.01, optimizer="adam",
                 optimizer_args=dict(beta1=0.7, beta2=0.9), schedule="onecycle",
                 label_smoothing=0.1, validation="none", train_limit=None, shuffle=True),
    # 20 passes over all the training images translated by up to 2 pixels (add
    # --augment-flip for images that may be mirrored: Fashion-MNIST), batch 128,
    # AdamW 0.01 (weight decay 5e-4), one-cycle, label smoothing 0.1
    "resnet8": dict(epochs=20, batch_size=128, lr=0.01, optimizer="adamw",
                    optimizer_args=dict(weight_decay=5e-4), schedule="onecycle",
                    label_smoothing=0.1, augment_shift=2, validation="none", train_limit=None,
                    shuffle=True),
}
RECIPE_DEFAULTS = dict(optimizer_args={}, schedule="constant", label_smoothing=0.0,
                       augment_shift=0)


def recipe_split(recipe, n, validation_split=None):
    """((train_start, train_end), (validation_start, validation_end)) of a
    training file of n images, as the recipe (or validation_split) says."""
    held = n // 12 if validation_split is None else int(round(n * validation_split))
    if recipe["validation"] == "none" and validation_split is None:
        held = 0
    if recipe["validation"] == "first":
        train, validation = (held, n), (0, held)
    else:
        train, validation = (0, n - held), (n - held, n)
    limit = recipe["train_limit"]
    if limit is not None:
        train = (train[0], min(train[1], train[0] + limit))
    return train, validation


# Any other network (LeNet-5, a network file): Adam 1e-3, batches of 50, 2,000 steps
# unless --steps or --epochs say otherwise; the last twelfth of the training images
# (or --validation-split) held out for validation.
DEFAULT_RECIPE = dict(steps=2000, batch_size=50, lr=1e-3, optimizer="adam",
                      validation="last", train_limit=None, shuffle=True)


def recipe_for(model):
    """The recipe of a built-in network by name, else DEFAULT_RECIPE."""
    return {**RECIPE_DEFAULTS, **RECIPES.get(model, DEFAULT_RECIPE)}


def split_data(cfg):
    """{"train", "validation", "test": (x, y)} and "dataset" for cfg: the training
    file split as the model's recipe says (or --validation-split)."""
    ds = datasets.load(cfg.dataset or "mnist", data_dir=cfg.data_dir, progress=cfg.progress,
                       image_size=cfg.image_size, test_split=cfg.test_split, seed=cfg.seed)
    (a, b), (va, vb) = recipe_split(recipe_for(cfg.model), len(ds.x_train),
                                    cfg.validation_split)
    return {"train": (ds.x_train[a:b], ds.y_train[a:b]),
            "validation": (ds.x_train[va:vb], ds.y_train[va:vb]) if vb > va else None,
            "test": (ds.x_test, ds.y_test), "dataset": ds}


def check_model_spec(spec):
    if spec not in MODELS and not os.path.isfile(spec):
        raise ValueError(f"--model {spec!r}: neither a built-in network "
                         f"({', '.join(sorted(MODELS))}) nor a network file")


def make_model(spec, seed, input_shape, class_names):
    """A built-in network by name, or a network file, for this data's shape and
    classes; a mismatch is a ShapeError saying which."""
    if spec in MODELS:
        model = MODELS[spec](seed=seed, input_shape=input_shape, classes=len(class_names))
    else:
        check_model_spec(spec)
        model = load_network(spec, seed, input_shape)
        if not model.built:
            model.build(input_shape)
        if model.input_shape != tuple(input_shape):
            raise ShapeError(f"{spec}: the network takes input_shape {model.input_shape}, "
                             f"but the data set's images are {tuple(input_shape)}")
    if model.output_shape != (len(class_names),):
        raise ShapeError(f"{spec}: the network's output is {model.output_shape}, but the data "
                         f"set has {len(class_names)} classes: make the last layer "
                         f"Dense({len(class_names)})")
    model.class_names = list(class_names)
    return model


OPTIMIZER_NAMES = {"adam": "Adam", "adamw": "AdamW", "sgd": "SGD"}   # --optimizer: the class


def optimizer_args(cfg):
    """The optimiser's arguments besides lr for a resolved cfg: the recipe's
    own (fast's betas, resnet8's weight decay) where cfg.optimizer is the
    recipe's, then --weight-decay, --momentum and --nesterov where given."""
    recipe = recipe_for(cfg.model)
    args = dict(recipe["optimizer_args"]) if cfg.optimizer == recipe["optimizer"] else {}
    if cfg.weight_decay is not None:
        args["weight_decay"] = cfg.weight_decay
    if cfg.momentum is not None:
        args["momentum"] = cfg.momentum
    if cfg.nesterov:
        args["nesterov"] = True
    return args


def new_model_and_optimizer(cfg, data):
    ds = data.get("dataset")
    if ds is not None:
        shape, names = ds.input_shape, ds.class_names
    else:          # arrays given directly (tests): shape and classes from them
        x, y = data["train"]
        shape = x.shape[1:] + ((1,) if x.ndim == 3 else ())
        names = [str(i) for i in range(int(max(y.max(), data["test"][1].max())) + 1)]
    model = make_model(cfg.model, cfg.seed, shape, names).set_precision(cfg.precision or "fp32")
    opt = OPTIMIZERS[OPTIMIZER_NAMES[cfg.optimizer]](model.parameters(), lr=cfg.lr,
                                                     **optimizer_args(cfg))
    return model, opt


def _check_resumed_optimizer(given, opt, checkpoint):
    """A resumed run keeps its checkpoint's optimiser: each of --optimizer,
    --weight-decay, --momentum and --nesterov given (the dict given) must
    agree with it, never be silently dropped."""
    have = {"optimizer": type(opt).__name__, **opt.config()}
    settings = ", ".join(f"{k} {v}" for k, v in have.items() if k != "optimizer")
    for key, value in given.items():
        if have.get(key) != (OPTIMIZER_NAMES[value] if key == "optimizer" else value):
            raise ValueError(f"--resume: {checkpoint} was trained with {have['optimizer']} "
                             f"({settings}), which a resumed run keeps: "
                             f"--{key.replace('_', '-')} {value} does not apply (leave it "
                             "out, or start a new run)")


def _check_resumed_precision(given, model, checkpoint):
    """A resumed run keeps its checkpoint's precision (the same arithmetic)."""
    if given is not None and given != model.precision:
        raise ValueError(f"--resume: {checkpoint} was trained in {model.precision}, which a "
                         f"resumed run keeps: --precision {given} does not apply (leave it "
                         "out, or start a new run)")


# ---------------------------------------------------------------- `pyconv train`

@dataclass
class TrainConfig:
    model: str = "tutorial"       # a built-in network's name, or a network file
    dataset: str | None = None    # a registered data set's name, or a path
    steps: int | None = None
    epochs: float | None = None
    batch_size: int | None = None
    lr: float | None = None
    optimizer: str | None = None           # adam, adamw or sgd (None: the recipe's)
    weight_decay: float | None = None      # AdamW's or SGD's (None: the recipe's, else 0.01 / 0)
    momentum: float | None = None          # SGD's (None: 0)
    nesterov: bool = False                 # SGD's Nesterov momentum
    schedule: str | None = None            # None: the recipe's
    label_smoothing: float | None = None   # None: the recipe's
    augment_shift: int | None = None       # random translation, pixels (None: the recipe's)
    augment_flip: bool = False             # random horizontal flips
    validation_split: float | None = None
    image_size: tuple | None = None
    test_split: float | None = None
    seed: int = 0
    slices: int = SLICES                   # the gradient sums' slices (convcore.slices)
    precision: str | None = None           # pyconv.precision's (None: fp32, or the checkpoint's)
    threads: int | None = None
    data_dir: str | None = None
    checkpoint: str | None = None
    checkpoint_every: int = 1000
    resume: bool = False
    metrics: str | None = None
    tensorboard: str | None = None   # a folder for TensorBoard's event files
    eval_every: int = 1000
    progress: bool = True

    def resolved(self, n_train=None):
        """A copy with the model's recipe filling every value left as None."""
        recipe = recipe_for(self.model)
        out = TrainConfig(**asdict(self))
        for key in ("batch_size", "lr", "optimizer", "schedule", "label_smoothing",
                    "augment_shift"):
            if getattr(out, key) is None:
                setattr(out, key, recipe[key])
        _check_optimizer(out)
        if out.precision is not None:
            checked_precision("--precision", out.precision)
        epochs = out.epochs if out.steps is None and out.epochs is not None else (
            recipe.get("epochs") if out.steps is None else None)
        if epochs is not None and n_train:
            out.steps = int(math.ceil(epochs * n_train / out.batch_size))
        if out.steps is None:
            out.steps = recipe.get("steps", DEFAULT_RECIPE["steps"])
        for key in ("steps", "batch_size", "checkpoint_every", "eval_every"):
            if getattr(out, key) < 1:
                raise ValueError(f"--{key.replace('_', '-')} must be >= 1, got "
                                 f"{getattr(out, key)}")
        if not out.lr > 0:
            raise ValueError(f"--lr must be > 0, got {out.lr}")
        if not 0 <= out.label_smoothing < 1:
            raise ValueError(f"--label-smoothing must be in [0, 1), got {out.label_smoothing}")
        if out.resume and not out.checkpoint:
            raise ValueError("--resume needs --checkpoint PATH (the file to resume from)")
        return out


def _check_optimizer(cfg):
    """--optimizer and the settings that belong to it, in the command's words."""
    if cfg.optimizer not in OPTIMIZER_NAMES:
        raise ValueError(f"--optimizer must be one of {', '.join(OPTIMIZER_NAMES)}, "
                         f"got {cfg.optimizer!r}")
    if cfg.weight_decay is not None and not cfg.weight_decay >= 0:
        raise ValueError(f"--weight-decay must be a number >= 0, got {cfg.weight_decay}")
    if cfg.weight_decay is not None and cfg.optimizer == "adam":
        raise ValueError("--weight-decay needs --optimizer adamw (decoupled, as PyTorch's "
                         "AdamW) or sgd (added to the gradient); adam has none")
    if cfg.momentum is not None and not 0 <= cfg.momentum < 1:
        raise ValueError(f"--momentum must be in [0, 1), got {cfg.momentum}")
    if (cfg.momentum is not None or cfg.nesterov) and cfg.optimizer != "sgd":
        raise ValueError(f"--momentum and --nesterov are SGD's: they need --optimizer sgd "
                         f"(this run's is {cfg.optimizer})")
    if cfg.nesterov and not cfg.momentum:
        raise ValueError("--nesterov needs --momentum > 0")


def _callbacks(cfg, model_name, world):
    out = [Evaluate(cfg.eval_every)]
    if cfg.tensorboard and world.is_root:
        out.append(TensorBoard(cfg.tensorboard))
    if cfg.schedule != "constant":
        out.append(LearningRateSchedule(cfg.schedule, cfg.lr, cfg.steps))
    if cfg.checkpoint:
        out.append(Checkpoint(cfg.checkpoint, cfg.checkpoint_every))
    if cfg.progress and sys.stderr.isatty() and world.is_root:
        out.append(ProgressBar(model_name))
    return out


def train(cfg, data=None, log=log):
    """Train as cfg says; returns the metrics dict (also written to cfg.metrics).
    Under a launcher of several processes (mpiexec, srun), data-parallel over
    them (pyconv.distributed): rank 0 writes and logs, every rank returns."""
    check_model_spec(cfg.model)           # before any data is read or fetched
    world = distributed.world()
    if cfg.threads is not None:
        convcore.set_num_threads(cfg.threads)
    elif world.size > 1 and "OMP_NUM_THREADS" not in os.environ:
        convcore.set_num_threads(max(1, len(os.sched_getaffinity(0)) // world.local_size))
    given = {k: getattr(cfg, k) for k in ("optimizer", "weight_decay", "momentum", "nesterov")
             if getattr(cfg, k) not in (None, False)}     # what a resumed run must agree with
    cfg.resolved()                          # (its errors before any data is read)
    data = data or split_data(cfg)
    cfg = cfg.resolved(len(data["train"][0]))
    if cfg.batch_size < world.size:         # the library's checks, in the command's words
        raise ValueError(f"--batch-size ({cfg.batch_size}) is the global batch: it must be at "
                         f"least the number of processes ({world.size})")
    if cfg.resume and not os.path.exists(cfg.checkpoint):
        raise FileNotFoundError(f"--resume: checkpoint {cfg.checkpoint} does not exist")
    model, opt = new_model_and_optimizer(cfg, data)
    augment = Augment(cfg.augment_shift, cfg.augment_flip, cfg.seed)
    h, w = data["train"][0].shape[1:3]
    if cfg.augment_shift >= min(h, w):     # the library's check, in the command's words
        raise ValueError(f"--augment-shift {cfg.augment_shift} does not fit images of {h}x{w}: "
                         f"it must be smaller than both sides (at most {min(h, w) - 1})")

    if world.size > 1:
        _check_ranks_alike(world, cfg, model, data)
    trainer = Trainer(model, opt, data["train"], steps=cfg.steps, batch_size=cfg.batch_size,
                      validation=data.get("validation"), test=data.get("test"),
                      shuffle=recipe_for(cfg.model)["shuffle"],
                      seed=cfg.seed, callbacks=_callbacks(cfg, model.name, world), log=log,
                      config=asdict(cfg), world=world, label_smoothing=cfg.label_smoothing,
                      augment=augment, slices=cfg.slices)
    trainer.resume_hint = (f"pyconv train --model {cfg.model} --checkpoint {{path}} --resume "
                           f"--steps {cfg.steps}"
                           + (f" --dataset {cfg.dataset}" if cfg.dataset else "")
                           + (f" --data-dir {cfg.data_dir}" if cfg.data_dir else "")
                           + (f" --slices {cfg.slices}" if cfg.slices != SLICES else "")
                           + (f" --augment-shift {cfg.augment_shift}" if cfg.augment_shift
                              else "") + (" --augment-flip" if cfg.augment_flip else ""))
    if cfg.resume:
        trainer.resume(cfg.checkpoint, lr=cfg.lr)
        _check_resumed_optimizer(given, trainer.optimizer, cfg.checkpoint)
        _check_resumed_precision(cfg.precision, trainer.model, cfg.checkpoint)
    wall = time.perf_counter()
    trainer.run()
    dataset = getattr(data.get("dataset"), "name", cfg.dataset)
    metrics = _metrics(cfg, trainer, time.perf_counter() - wall, dataset)
    if cfg.metrics and world.is_root:
        try:
            atomic_write(cfg.metrics, lambda f: f.write(json.dumps(metrics, indent=2).encode()))
        except OSError as e:
            raise WriteError(f"could not write the metrics {cfg.metrics}: "
                             f"{e.strerror or e}; {trainer.kept_message()}") from None
    return metrics


def _check_ranks_alike(world, cfg, model, data):
    """Every rank has the same options (threads aside), network and data."""
    options = {f"--{k.replace('_', '-')}": v for k, v in asdict(cfg).items() if k != "threads"}
    arrays = {f"{k} {part}": data[k][i] for k in ("train", "validation", "test")
              if data.get(k) for i, part in enumerate(("images", "labels"))}
    world.check_same({"option": options, "network": model.architecture(),
                      **distributed.data_fingerprint(arrays)})


def _metrics(cfg, trainer, wall_seconds, dataset):
    history, secs = trainer.history, trainer.clock.seconds
    last = next((h for h in reversed(history) if "validation_accuracy" in h), {})
    test_acc = next((h["test_accuracy"] for h in reversed(history) if "test_accuracy" in h),
                    None)
    return {
        "model": trainer.model.name, "dataset": dataset, "steps": trainer.step,
        "batch_size": cfg.batch_size, "lr": cfg.lr,
        "optimizer": {"type": type(trainer.optimizer).__name__, **trainer.optimizer.config()},
        "schedule": cfg.schedule, "precision": trainer.model.precision,
        "label_smoothing": cfg.label_smoothing, "augment_shift": cfg.augment_shift,
        "augment_flip": cfg.augment_flip,
        "seed": cfg.seed, "threads": convcore.get_num_threads(),
        "test_accuracy": test_acc,
        "validation_accuracy": last.get("validation_accuracy"),
        "train_seconds": secs,
        "images_per_second": trainer.step * cfg.batch_size / secs if secs else None,
        "wall_seconds_this_run": wall_seconds,
        "eval_every": cfg.eval_every, "processes": trainer.world.size, "history": history,
    }
