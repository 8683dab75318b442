"""Past one machine, by measurement and model: two ranks in separate network
namespaces joined by a veth pair, so MPI must use TCP (MPICH's ofi netmod,
its tcp provider; MPIR_CVAR_NOLOCAL=1 keeps shared memory out), the link
shaped with tc (tbf) to several rates; at each, the link's alpha (latency)
and beta (seconds per byte) from an MPI ping-pong, and the tutorial
network's step time on 2 ranks x 1 thread (bench_mpi.py's worker). An
alpha-beta model of the all-reduce fitted to those points predicts the
scaling efficiency at K = 8, 32 and 128 machines.

    sudo env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/mpi_netns.py

Needs root (ip netns, tc), and only makes addresses inside its own
namespaces (10.77.0.1 and .2); removes them at the end. Writes
benchmarks/results/mpi-netns.json and, with matplotlib, mpi-netns.png.
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
NS = ("pyconv-a", "pyconv-b")
SIZES = (8, 65536, 1 << 20, 4 << 20, 16 << 20)
MPI_TCP = {"MPIR_CVAR_NOLOCAL": "1", "MPIR_CVAR_CH4_NETMOD": "ofi", "FI_PROVIDER": "tcp",
           "FI_TCP_IFACE": "mpi0", "OMP_NUM_THREADS": "1"}


def sh(*cmd, check=True):
    return subprocess.run(cmd, check=check, capture_output=True, text=True)


def setup():
    teardown()
    for ns in NS:
        sh("ip", "netns", "add", ns)
    sh("ip", "link", "add", "pyconv-va", "type", "veth", "peer", "name", "pyconv-vb")
    for ns, dev, addr in zip(NS, ("pyconv-va", "pyconv-vb"), ("10.77.0.1", "10.77.0.2")):
        sh("ip", "link", "set", dev, "netns", ns)
        sh("ip", "-n", ns, "link", "set", dev, "name", "mpi0")
        sh("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", "mpi0")
        sh("ip", "-n", ns, "link", "set", "mpi0", "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")


def teardown():
    for ns in NS:
        sh("ip", "netns", "del", ns, check=False)


def shape(gbit):
    """tbf on both ends' egress at gbit (None: unshaped)."""
    for ns in NS:
        sh("tc", "-n", ns, "qdisc", "del", "dev", "mpi0", "root", check=False)
        if gbit:
            rate = int(gbit * 1e9)
            burst = max(rate // 8 // 1000, 64 * 1024)       # 1 ms at the rate (hrtimer)
            sh("tc", "-n", ns, "qdisc", "add", "dev", "mpi0", "root", "tbf", "rate",
               f"{rate}bit", "burst", str(burst), "latency", "100ms")


def both(args):
    """mpiexec with one rank in each namespace, running this python with args."""
    side = [sys.executable, *args]
    env = dict(os.environ, **MPI_TCP)
    cmd = ["mpiexec", "-genvall", "-n", "1", "ip", "netns", "exec", NS[0], *side, ":",
           "-n", "1", "ip", "netns", "exec", NS[1], *side]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env,
                         timeout=600).stdout
    return json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])


def pingpong():
    """One-way seconds per message size between the two ranks (median of 20)."""
    from mpi4py import MPI
    comm, out = MPI.COMM_WORLD, {}
    for n in SIZES:
        a = np.zeros(max(n // 4, 1), np.float32)
        times = []
        for _ in range(20 if n < (4 << 20) else 8):
            comm.Barrier()
            t = time.perf_counter()
            if comm.rank == 0:
                comm.Send(a, 1)
                comm.Recv(a, 1)
            else:
                comm.Recv(a, 0)
                comm.Send(a, 0)
            times.append((time.perf_counter() - t) / 2)
        out[n] = float(np.median(times))
    if comm.rank == 0:
        print("RESULT " + json.dumps(out), flush=True)


def fit_alpha_beta(times):
    """alpha: the one-way time of the smallest message; beta: the slope of
    one-way time against size over the messages of 1 MB and more."""
    times = {int(k): v for k, v in times.items()}
    sizes = sorted(times)
    big = [n for n in sizes if n >= 1 << 20]
    beta = np.polyfit(np.array(big, np.float64), [times[n] for n in big], 1)[0]
    return float(times[sizes[0]]), float(beta)


def allreduce_seconds(k, alpha, beta, sizes):
    """All-reduce of each gradient as MPICH does a large one (Rabenseifner:
    reduce-scatter by recursive halving, all-gather by recursive doubling):
    2 log2(k) messages, 2 (k - 1) / k of the tensor's bytes, per tensor."""
    return sum(2 * np.log2(k) * alpha + 2 * (k - 1) / k * s * beta for s in sizes)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pingpong", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--rates", default="none,10,5,2.5,1", help="Gbit/s ('none': unshaped)")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--replot", action="store_true", help="only redraw the plot from the JSON")
    p.add_argument("--slices", type=int, default=1, help="the batch's slices (16: the "
                   "canonical order's tree sum; 1: MPI's all-reduce)")
    p.add_argument("--out", default=os.path.join(HERE, "results", "mpi-netns.json"))
    args = p.parse_args(argv)
    if args.pingpong:
        return pingpong()
    if args.replot:
        return replot()
    sys.path.insert(0, HERE)
    import pyconv

    from _common import machine
    from bench_mpi import run
    grads = [p.value.nbytes for p in pyconv.models.tutorial_cnn().parameters()]
    single = {b: run(1, b, s, slices=args.slices) for b, s in ((50, 40), (256, 10))}
    points = []
    setup()
    try:
        for rate in args.rates.split(","):
            gbit = None if rate == "none" else float(rate)
            shape(gbit)
            times = both([os.path.abspath(__file__), "--pingpong"])
            alpha, beta = fit_alpha_beta(times)
            for batch in (50, 256):
                row = both([os.path.join(HERE, "bench_mpi.py"), "--worker", "--batch",
                            str(batch), "--steps", str(args.steps if batch == 50 else 5),
                            "--slices", str(args.slices)])
                points.append({"gbit": gbit, "alpha_s": alpha, "beta_s_per_byte": beta,
                               "effective_gbit": 8e-9 / beta, "batch_per_rank": batch,
                               "step_s": row["step_s"], "wait_s": row["wait_s_per_step"],
                               "allreduce_s": row["allreduce_s"],
                               "model_allreduce_s": allreduce_seconds(2, alpha, beta, grads)})
                print(json.dumps(points[-1]), flush=True)
    finally:
        teardown()
    model = predict(points, single, grads)
    with open(args.out, "w") as f:
        json.dump({"machine": machine(), "slices": args.slices, "single": single,
                   "points": points, "model": model, "gradient_bytes": grads}, f, indent=1)
    print(json.dumps(model, indent=1))
    plot(points, model, grads, args.out.replace(".json", ".png"))


def plot(points, model, grads, path):
    """Measured step times beside the model's, and the predicted efficiency."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    left, right = fig.subplots(1, 2)
    for batch, colour in ((50, "C0"), (256, "C1")):
        pts = sorted((p for p in points if p["batch_per_rank"] == batch and p["gbit"]),
                     key=lambda p: p["effective_gbit"])
        m = model[batch]
        bw = [p["effective_gbit"] for p in pts]
        left.plot(bw, [p["step_s"] * 1e3 for p in pts], "o", color=colour,
                  label=f"batch {batch}/rank, measured")
        left.plot(bw, [(m["compute_s_fitted"] + m["exposed_fraction"] * p["model_allreduce_s"])
                       * 1e3 for p in pts], "-", color=colour, label=f"batch {batch}, model")
        for gbit, style in (("10", "--"), ("25", ":")):
            eff = {str(k): {str(n): e for n, e in v.items()}     # (int keys until saved)
                   for k, v in m["efficiency"].items()}[gbit]
            ks = sorted(eff, key=int)
            right.plot([int(k) for k in ks], [eff[k] for k in ks], style,
                       marker="o", color=colour, label=f"batch {batch}, {gbit} Gbit/s")
    left.set_xscale("log"), left.set_xlabel("link (Gbit/s, as measured by MPI)")
    left.set_ylabel("step time, 2 ranks (ms)"), left.legend(fontsize=8), left.grid(alpha=0.3)
    right.set_xscale("log", base=2), right.set_xlabel("machines (K)")
    right.set_ylabel("scaling efficiency (model)"), right.set_ylim(0, 1.05)
    right.legend(fontsize=8), right.grid(alpha=0.3)
    fig.savefig(path, dpi=100)


def replot():
    with open(os.path.join(HERE, "results", "mpi-netns.json")) as f:
        d = json.load(f)
    model = {int(k): v for k, v in d["model"].items()}
    plot(d["points"], model, d["gradient_bytes"], os.path.join(HERE, "results", "mpi-netns.png"))


def predict(points, single, grads):
    """Fit step = compute + exposed * allreduce (per batch) to the measured
    points; predict the efficiency at K machines for 10 and 25 Gbit/s links,
    each machine computing as one process alone does (single)."""
    out = {}
    for batch in (50, 256):
        pts = [p for p in points if p["batch_per_rank"] == batch]
        a = np.array([[1.0, p["model_allreduce_s"]] for p in pts])
        t = np.array([p["step_s"] for p in pts])
        (compute, exposed), *_ = np.linalg.lstsq(a, t, rcond=None)
        alpha = float(np.median([p["alpha_s"] for p in pts]))
        ten = [p for p in pts if p["gbit"] == 10]
        efficiency = min(1.0, ten[0]["effective_gbit"] / 10) if ten else 1.0   # TCP's share
        t1 = single[batch]["step_s"]
        rows = {}
        for gbit in (10, 25):
            beta = 8e-9 / (gbit * efficiency)
            rows[gbit] = {k: t1 / (t1 + max(0.0, exposed) * allreduce_seconds(k, alpha, beta,
                                                                              grads))
                          for k in (2, 8, 32, 128)}
        out[batch] = {"compute_s_fitted": float(compute), "exposed_fraction": float(exposed),
                      "alpha_s": alpha, "single_step_s": t1, "tcp_share_of_link": efficiency,
                      "fit_residual_s": [float(x) for x in t - a @ [compute, exposed]],
                      "efficiency": rows}
    return out


if __name__ == "__main__":
    main()
