"""One step of each operation of modern small CNNs against what PyTorch 2.13
computed from the same inputs and weights (tests/data/torch-oracle.npz, written
by tests/data/make_torch_oracle.py; PyTorch ran in float64, pyconv in float32):
batch normalisation in training (output, gradients, running statistics with
PyTorch's momentum=0.1 mapped to ours 0.9) and inference, average and global
average pools, label smoothing, AdamW, SGD with Nesterov momentum and weight
decay, the one-cycle learning rate."""
import os

import numpy as np
import pytest

import pyconv
from pyconv.layers import AveragePooling2D, BatchNormalization, GlobalAveragePooling2D, Parameter
from pyconv.losses import softmax_cross_entropy
from pyconv.train.callbacks import LearningRateSchedule

ORACLE = np.load(os.path.join(os.path.dirname(__file__), "data", "torch-oracle.npz"))


def close(got, name, rtol=1e-5, atol=1e-5):
    want = ORACLE[name]
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol * (1 + np.abs(want).max()),
                               err_msg=name)


def test_batchnorm_training_and_inference_match_pytorch():
    o = ORACLE
    bn = BatchNormalization()          # momentum 0.9 here = PyTorch's momentum=0.1
    bn.build(o["bn_x"].shape[1:], np.random.default_rng())
    bn.params["gamma"].value[...] = o["bn_gamma"]
    bn.params["beta"].value[...] = o["bn_beta"]
    y, ctx = bn.forward(o["bn_x"], training=True)
    close(y, "bn_y")
    close(bn.buffers["mean"], "bn_running_mean")
    close(bn.buffers["var"], "bn_running_var")
    dx = bn.backward(ctx, o["bn_dy"])
    close(dx, "bn_dx", atol=1e-4)
    close(bn.params["gamma"].grad, "bn_dgamma")
    close(bn.params["beta"].grad, "bn_dbeta")
    close(bn.forward(o["bn_x_eval"])[0], "bn_y_eval")


def test_average_pools_match_pytorch():
    o = ORACLE
    pool = AveragePooling2D(3, stride=2, padding=1)     # PyTorch's count_include_pad=False
    y, ctx = pool.forward(o["avg_x"], training=True)
    close(y, "avg_y")
    close(pool.backward(ctx, o["avg_dy"]), "avg_dx")
    gap = GlobalAveragePooling2D()
    y, ctx = gap.forward(o["avg_x"], training=True)
    close(y, "gap_y")
    close(gap.backward(ctx, o["gap_dy"]), "gap_dx")


def test_label_smoothing_matches_pytorch():
    loss, grad = softmax_cross_entropy(ORACLE["ls_logits"], ORACLE["ls_labels"],
                                       label_smoothing=0.1)
    close(loss, "ls_loss")
    close(grad, "ls_grad")


@pytest.mark.parametrize("name, make", [
    ("adamw", lambda ps: pyconv.optim.AdamW(ps, lr=1e-2, weight_decay=0.05)),
    ("nesterov", lambda ps: pyconv.optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True,
                                             weight_decay=5e-4)),
])
def test_optimisers_match_pytorch(name, make):
    p = Parameter("p", ORACLE["opt_p0"])
    opt = make([p])
    for g in ORACLE["opt_grads"]:
        p.grad = g.copy()
        opt.step()
    # Adam's epsilon: PyTorch adds it to sqrt(v_hat), TensorFlow (and pyconv) to
    # sqrt(v): a 1e-8 difference in the denominator, far below this tolerance
    close(p.value, f"{name}_p", rtol=1e-5, atol=1e-6)


def test_one_cycle_schedule_matches_pytorch():
    schedule = LearningRateSchedule("onecycle", 0.01, 50)
    np.testing.assert_allclose([schedule.rate(s) for s in range(50)], ORACLE["onecycle_lrs"],
                               rtol=1e-12)
