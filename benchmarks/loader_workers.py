#!/usr/bin/env python
"""Training speed of a config with and without DataLoader worker processes, side by side.

    python benchmarks/loader_workers.py [--config-file configs/pcsc_synthetic.yaml] \
        [--workers 0 1] [--iters 60] [--repeats 2] [--procs N] [--opts KEY VALUE ...]

Runs ``train_net.py --num-gpus PROCS`` for ``--iters`` iterations per DATALOADER.NUM_WORKERS
value, the values alternated ``--repeats`` times (so a host that slows down mid-run hits all of
them), each from the Kinetics I3D weights into a temporary folder. Prints, per run, detectron2's
seconds per iteration (its "Overall training speed", which leaves out the first iterations), the
wall time of the whole command (start-up included) and the CPU seconds it used (user + system,
all its processes). Needs the config's dataset (``make run`` generates the synthetic one).
Prints figures, asserts nothing.

Why: on 2 cores, where ``make run`` trains in two processes of one thread each, a worker per
process competes with the training for the cores; the mapper itself takes a few milliseconds per
clip (README, Speed).
"""
import argparse
import os
import re
import resource
import subprocess
import sys
import tempfile
import time

from pcsc_d2.utils.jobs import default_train_procs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WEIGHTS = os.path.join(ROOT, "weights", "i3d_kinetics400_two_stream.pth")
SPEED = re.compile(r"Overall training speed: \d+ iterations in \S+ \(([0-9.]+) s / it\)")


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def train_once(args, workers: int, folder: str) -> dict:
    """One ``train_net.py`` run; returns its s/iteration, wall seconds and CPU seconds."""
    cmd = [sys.executable, "train_net.py", "--config-file", args.config_file,
           "--num-gpus", str(args.procs), *args.opts, "OUTPUT_DIR", folder,
           "MODEL.WEIGHTS", WEIGHTS, "SOLVER.MAX_ITER", str(args.iters),
           "SOLVER.CHECKPOINT_PERIOD", "1000000", "TEST.EVAL_PERIOD", "0", "DATASETS.TEST", "()",
           "DATALOADER.NUM_WORKERS", str(workers)]
    cpu, start = children_cpu(), time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - start, children_cpu() - cpu
    if done.returncode:
        sys.exit(f"train_net.py failed (NUM_WORKERS {workers}):\n{done.stderr[-2000:]}")
    match = SPEED.search(done.stdout + done.stderr)
    return {"s_per_iter": float(match.group(1)) if match else float("nan"),
            "wall_s": wall, "cpu_s": cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", default=os.path.join("configs", "pcsc_synthetic.yaml"))
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--iters", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--procs", type=int, default=default_train_procs(),
                        help="train_net.py --num-gpus (default: the main job's, 2 on 2+ cores)")
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[])
    args = parser.parse_args()
    os.environ.setdefault("DETECTRON2_DATASETS", os.path.join(ROOT, "datasets"))
    synthetic = os.path.join(os.environ["DETECTRON2_DATASETS"], "synthetic", "synthetic-GT.pkl")
    needs = [(WEIGHTS, "python tools/convert_i3d_weights.py")]
    if "synthetic" in args.config_file:
        needs.append((synthetic, "make run generates it"))
    for need, how in needs:
        if not os.path.isfile(need):
            print(f"skipped: {need} is missing ({how})")
            return
    print(f"{args.config_file}: {args.iters} iterations in {args.procs} process(es), "
          f"NUM_WORKERS {args.workers}, {args.repeats} round(s), order alternated")
    print(f"{'round':>5} {'workers':>7} {'s/iter':>7} {'wall s':>7} {'CPU s':>7}")
    rows = {w: [] for w in args.workers}
    for r in range(args.repeats):
        order = args.workers if r % 2 == 0 else args.workers[::-1]
        for w in order:
            with tempfile.TemporaryDirectory() as folder:
                row = train_once(args, w, folder)
            rows[w].append(row)
            print(f"{r + 1:>5} {w:>7} {row['s_per_iter']:>7.3f} {row['wall_s']:>7.1f} "
                  f"{row['cpu_s']:>7.1f}", flush=True)
    print("mean:")
    for w, runs in rows.items():
        mean = {k: sum(x[k] for x in runs) / len(runs) for k in runs[0]}
        print(f"{'':>5} {w:>7} {mean['s_per_iter']:>7.3f} {mean['wall_s']:>7.1f} "
              f"{mean['cpu_s']:>7.1f}")


if __name__ == "__main__":
    main()
