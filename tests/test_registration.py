"""A bare ``import pcsc_d2`` (fresh interpreter) registers every name a config refers to."""
import json
import subprocess
import sys

_PROBE = """
import json
from detectron2.data import DatasetCatalog
from detectron2.modeling import BACKBONE_REGISTRY, META_ARCH_REGISTRY, ROI_HEADS_REGISTRY
before = {r._name: sorted(r._obj_map) for r in (BACKBONE_REGISTRY, META_ARCH_REGISTRY,
                                               ROI_HEADS_REGISTRY)}
before["datasets"] = DatasetCatalog.list()
import pcsc_d2
after = {r._name: sorted(r._obj_map) for r in (BACKBONE_REGISTRY, META_ARCH_REGISTRY,
                                              ROI_HEADS_REGISTRY)}
after["datasets"] = DatasetCatalog.list()
print(json.dumps({"before": before, "after": after}))
"""


def test_import_pcsc_d2_registers_every_name():
    proc = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = json.loads(proc.stdout.strip().splitlines()[-1])
    expected = {
        "BACKBONE": {"build_pcsc_i3d_backbone", "build_pcsc_two_stream_backbone"},
        "META_ARCH": {"PCSCTwoStreamRCNN"},
        "ROI_HEADS": {"PCSCCascadeROIHeads"},
        "datasets": {"ucf24_train", "ucf24_test", "synthetic_train", "synthetic_test"}
        | {f"jhmdb_{s}_split{i}" for s in ("train", "test") for i in (1, 2, 3)},
    }
    for key, names in expected.items():
        assert not names & set(state["before"][key]), key  # not there before the import
        assert names <= set(state["after"][key]), (key, names - set(state["after"][key]))
