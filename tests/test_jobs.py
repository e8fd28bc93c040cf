"""The evaluation command that the main job and the seed study share."""
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
