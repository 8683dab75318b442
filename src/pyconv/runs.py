"""What `pyconv train` trains on and with: the data set split as the recipe
says, and the model (a built-in network or a network file) with its optimiser."""
import json
import os

from . import datasets
from .errors import ShapeError
from .model import Sequential
from .models import MODELS
from .optim import SGD, Adam

# Each model's published recipe: the seed's TensorFlow run and the book's run.
# The validation set is the first (or last) twelfth of the training file:
# MNIST's 5,000 of 60,000 (any other count scales, e.g. the tests' sample).
RECIPES = {
    # 20,000 steps of 50 on 55,000 images (the first 5,000 held out), Adam 1e-4
    "tutorial": dict(steps=20000, batch_size=50, lr=1e-4, optimizer="adam",
                     validation="first", train_limit=None, shuffle=True),
    # 300 passes over the first 1,000 images in batches of 128 (7 full batches a
    # pass, in order, as the book's loop does), plain SGD; validation: the last 5,000
    "grokking": dict(steps=2100, batch_size=128, lr=1.0, optimizer="sgd",
                     validation="last", train_limit=1000, shuffle=False),
}


def recipe_split(recipe, n, validation_split=None):
    """((train_start, train_end), (validation_start, validation_end)) of a
    training file of n images, as the recipe (or validation_split) says."""
    held = n // 12 if validation_split is None else int(round(n * validation_split))
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
    return RECIPES.get(model, DEFAULT_RECIPE)


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


def load_network(path, seed=0, input_shape=None):
    """A model from a network file (JSON, or TOML): {"input_shape": [H, W, C],
    "layers": [{"type": "Conv2D", "filters": 6, "kernel_size": 5}, ...]}; the
    input shape may be left out and given (from the data) instead."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
        if path.endswith(".toml"):
            import tomllib
            arch = tomllib.loads(raw.decode())
        else:
            arch = json.loads(raw)
    except OSError as e:
        raise ValueError(f"{path}: cannot read the network file ({e.strerror})") from None
    except ValueError as e:
        raise ValueError(f"{path}: not a valid network file ({e})") from None
    if isinstance(arch, dict) and arch.get("input_shape") is None and input_shape is not None:
        arch = {**arch, "input_shape": list(input_shape)}
    arch = {**arch, "name": arch.get("name") or os.path.splitext(os.path.basename(path))[0]}
    return Sequential.from_architecture(arch, seed=seed, where=path)


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


def new_model_and_optimizer(cfg, data):
    ds = data.get("dataset")
    if ds is not None:
        shape, names = ds.input_shape, ds.class_names
    else:          # arrays given directly (tests): shape and classes from them
        x, y = data["train"]
        shape = x.shape[1:] + ((1,) if x.ndim == 3 else ())
        names = [str(i) for i in range(int(max(y.max(), data["test"][1].max())) + 1)]
    model = make_model(cfg.model, cfg.seed, shape, names)
    kind = recipe_for(cfg.model)["optimizer"]
    opt = (Adam if kind == "adam" else SGD)(model.parameters(), lr=cfg.lr)
    return model, opt
