"""Run by tests/test_distributed.py under `mpiexec -n K` (and alone, K = 1):
`steps` training steps of the tutorial network (or resnet8: batch
normalisation) on fixed batches of the MNIST test images, through
distributed.DataParallel (each rank takes its slice of the global batch),
then rank 0 writes the weights (and running statistics) to OUT.npz.

    mpiexec -n 2 python tests/mpi_worker.py OUT.npz OPTIMIZER STEPS BATCH [MODEL [SLICES
                                                                  [PRECISION]]]

SLICES (default 16): the batch's slices (convcore.slices; 1: MPI's own order).
PRECISION (default fp32): the model's (pyconv.precision).
"""
import sys

import numpy as np

import pyconv
from pyconv.train import distributed

from conftest import MNIST_DIR


def main(out, optimizer, steps, batch, model_name="tutorial", slices=16, precision="fp32"):
    world = distributed.world()
    ds = pyconv.datasets.load("mnist", data_dir=MNIST_DIR)
    model = pyconv.models.MODELS[model_name](seed=0).set_precision(precision)
    params = model.parameters()
    opt = (pyconv.optim.Adam(params, lr=1e-4) if optimizer == "adam"
           else pyconv.optim.SGD(params, lr=0.05))
    losses, parallel = [], distributed.DataParallel(model, opt, slices=int(slices))
    for step in range(steps):                   # (around the 10,000 images again)
        first = step * batch % (len(ds.y_test) - batch + 1)
        rows = slice(first, first + batch)
        losses.append(parallel.train_step(ds.x_test[rows], ds.y_test[rows]))
    world.check_in_sync(model, steps)           # every rank holds the same weights
    if world.is_root:
        np.savez(out, losses=np.array(losses), size=world.size,
                 **{name: p.value for name, p in model.named_parameters()},
                 **{name: b for name, b in model.named_buffers()})


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), *sys.argv[5:])
