"""Helpers that the main job, the seed study and the real-clip check share."""
from pcsc_d2.utils.jobs import tr_eval_command


def test_tr_eval_command_turns_tr_on_and_lets_last_opts_override_it():
    cmd = tr_eval_command("py", "c.yaml", "out", "tr.pth", ["SEED", "2"],
                          ["TUBES.REFINE.ENABLED", "False"])
    assert cmd[:5] == ["py", "train_net.py", "--config-file", "c.yaml", "--eval-only"]
    assert cmd[cmd.index("OUTPUT_DIR") + 1] == "out"
    assert cmd[cmd.index("MODEL.WEIGHTS") + 1] == "tr.pth"
    assert cmd[cmd.index("MODEL.PCSC.ACTIONNESS.ENABLED") + 1] == "True"
    # detectron2 applies KEY VALUE pairs in order: the last one of a key wins.
    refine = [i for i, x in enumerate(cmd) if x == "TUBES.REFINE.ENABLED"]
    assert [cmd[i + 1] for i in refine] == ["True", "False"]
    assert cmd.index("SEED") < cmd.index("OUTPUT_DIR")
    assert "--num-gpus" not in cmd
    two = tr_eval_command("py", "c.yaml", "out", "tr.pth", procs=2)
    assert two[4:7] == ["--eval-only", "--num-gpus", "2"]


def test_train_procs_default_splits_two_cores_and_never_exceeds_them(monkeypatch):
    import argparse
    import os

    from pcsc_d2.utils.jobs import add_train_procs_argument

    for cores, expected in ((1, 1), (2, 2), (16, 2)):
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid, n=cores: set(range(n)))
        parser = argparse.ArgumentParser()
        add_train_procs_argument(parser)
        assert parser.parse_args([]).train_procs == expected
        assert parser.parse_args(["--train-procs", "4"]).train_procs == 4


def test_cpu_processes_split_the_cores(monkeypatch):
    import os

    import torch

    from detectron2.utils import comm

    from pcsc_d2.engine import get_pcsc_cfg, split_cpu_threads

    before = torch.get_num_threads()
    cfg = get_pcsc_cfg()
    cfg.MODEL.DEVICE = "cpu"
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    try:
        monkeypatch.setattr(comm, "get_local_size", lambda: 4)
        assert split_cpu_threads(cfg) == 2 == torch.get_num_threads()
        monkeypatch.setattr(comm, "get_local_size", lambda: 16)
        assert split_cpu_threads(cfg) == 1 == torch.get_num_threads()
        torch.set_num_threads(3)
        monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the user's choice wins
        assert split_cpu_threads(cfg) == 3
        monkeypatch.delenv("OMP_NUM_THREADS")
        monkeypatch.setattr(comm, "get_local_size", lambda: 1)  # one process: untouched
        assert split_cpu_threads(cfg) == 3
    finally:
        torch.set_num_threads(before)


def test_one_machine_jobs_take_a_free_port_unless_one_is_named():
    """Two multi-process trainings of one user on one machine must not share detectron2's
    uid-derived default port (the second would die with EADDRINUSE)."""
    from detectron2.engine import default_argument_parser

    from pcsc_d2.engine import train_net_dist_url

    parser = default_argument_parser()
    assert train_net_dist_url(parser.parse_args(["--num-gpus", "2"]), parser) == "auto"
    named = parser.parse_args(["--num-gpus", "2", "--dist-url", "tcp://127.0.0.1:5000"])
    assert train_net_dist_url(named, parser) == "tcp://127.0.0.1:5000"
    machines = parser.parse_args(["--num-machines", "2"])
    assert train_net_dist_url(machines, parser) == parser.get_default("dist_url")
