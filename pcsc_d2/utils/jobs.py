"""Resumable multi-step jobs (tools/main_job.py, tools/real_sample.py): each step runs unless
its result already exists, so an interrupted job picks up where it stopped."""
import logging
import os
import subprocess
import time
from typing import Callable, Dict, List, Optional

__all__ = [
    "StepRunner",
    "add_train_procs_argument",
    "default_train_procs",
    "run_command",
    "tr_eval_command",
]

logger = logging.getLogger(__name__)


def run_command(cmd: List[str], cwd: str) -> None:
    """Run a step as a user would, from ``cwd``; fail loudly (CalledProcessError)."""
    logger.info("$ %s", " ".join(cmd))
    subprocess.run(cmd, cwd=cwd, check=True)


def tr_eval_command(
    python: str, config_file: str, output_dir: str, tr_weights: str, opts: List[str] = (),
    last_opts: List[str] = (), procs: int = 1,
) -> List[str]:
    """``train_net.py --eval-only`` of a detector with its trained TR head (with and without TR
    in one evaluation), run from the repository root. ``opts`` are KEY VALUE overrides;
    ``last_opts`` come after the TR switches, so they can override those too. ``procs`` > 1
    evaluates in that many processes (``--num-gpus``; on a CPU the cores are split between them,
    and the evaluator gathers their detections: the same metrics, about 1.2x faster on 2 cores
    than one process of two threads)."""
    launch = ["--num-gpus", str(procs)] if procs > 1 else []
    return [python, "train_net.py", "--config-file", config_file, "--eval-only", *launch, *opts,
            "OUTPUT_DIR", output_dir, "MODEL.WEIGHTS", tr_weights,
            "MODEL.PCSC.ACTIONNESS.ENABLED", "True", "TUBES.REFINE.ENABLED", "True", *last_opts]


def default_train_procs() -> int:
    """Processes of the CPU jobs: 2, or 1 on a one-core machine."""
    return min(2, len(os.sched_getaffinity(0)))


def add_train_procs_argument(parser) -> None:
    """``--train-procs N`` of the CPU jobs: train_net.py --num-gpus N, the cores split between
    the processes (see pcsc_d2.engine.split_cpu_threads). Default 2, or 1 on a one-core machine:
    on 2 cores two processes of one thread train the synthetic config 1.2-1.5x faster than one
    process of two threads (README, Speed)."""
    parser.add_argument(
        "--train-procs", type=int, default=default_train_procs(),
        help="training processes (train_net.py --num-gpus); SOLVER.IMS_PER_BATCH must divide by "
        "it (default: 2, or 1 on a one-core machine)",
    )


def synthetic_dataset_command(python: str, folder: str, design: str) -> List[str]:
    """Generate the synthetic dataset of ``design`` ("motion" or "balanced") into ``folder``,
    with the seed every figure of the project uses (0)."""
    return [python, "-m", "pcsc_d2.data.synthetic", "--out", folder, "--seed", "0",
            "--design", design]


class StepRunner:
    """Runs named steps, skipping those whose result exists, and times each.

    Args:
        is_done: whether a step's result path counts as done; default: it is a file.

    Attributes:
        timings: {step name: seconds} (a skipped step takes ~0 s).
    """

    def __init__(self, is_done: Optional[Callable[[str], bool]] = None):
        self.is_done = is_done or os.path.isfile
        self.timings: Dict[str, float] = {}

    def step(self, name: str, done: str, action: Callable[[], None]) -> None:
        """Run ``action`` unless ``done`` (the step's result) exists."""
        t0 = time.time()
        if self.is_done(done):
            logger.info("step %s: %s exists, skipped", name, done)
        else:
            logger.info("step %s", name)
            action()
        self.timings[name] = round(time.time() - t0, 1)
