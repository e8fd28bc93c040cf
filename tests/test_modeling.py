"""The PCSC detector end to end on tiny clips: backbone, training losses, inference, toggles."""
import math
import os

import pytest
import torch

from detectron2.config import get_cfg
from detectron2.modeling import build_backbone, build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

import pcsc_d2.modeling  # noqa: F401  (registers the PCSC components)
from pcsc_d2.config import add_pcsc_config
from pcsc_d2.modeling.roi_heads import pcsc_cascade

_TINY = os.path.join(os.path.dirname(__file__), "..", "configs", "quick", "pcsc_tiny.yaml")
H, W, K = 64, 80, 4


def _cfg(**pcsc):
    cfg = get_cfg()
    add_pcsc_config(cfg)
    cfg.merge_from_file(_TINY)
    for k, v in pcsc.items():
        setattr(cfg.MODEL.PCSC, k, v)
    return cfg


def _model(cfg, seed=0):
    torch.manual_seed(seed)
    return build_model(cfg)


def _input(with_gt=True, seed=0, size=(H, W)):
    g = torch.Generator().manual_seed(seed)
    inst = Instances(size)
    if with_gt:
        inst.gt_boxes = Boxes(torch.tensor([[10.0, 12.0, 40.0, 50.0]]))
        inst.gt_classes = torch.tensor([1])
    else:
        inst.gt_boxes = Boxes(torch.zeros(0, 4))
        inst.gt_classes = torch.zeros(0, dtype=torch.int64)
    clip = lambda: torch.randint(0, 256, (3, K, *size), generator=g, dtype=torch.uint8)  # noqa
    return {
        "rgb": clip(),
        "flow": clip(),
        "instances": inst,
        "height": 2 * size[0],
        "width": 2 * size[1],
        "image_id": f"Class/vid/{seed:05d}",
    }


def test_backbone_output_shape_matches_forward():
    cfg = _cfg()
    torch.manual_seed(0)
    backbone = build_backbone(cfg)
    x = torch.randn(1, 3, K, H, 96)
    out = backbone({"rgb": x, "flow": x})
    assert set(out) == {"rgb", "flow"}
    for stream in out:
        assert list(out[stream]) == ["p2", "p3", "p4", "p5", "p6"]
        for name, shape in backbone.output_shape().items():
            size = (math.ceil(H / shape.stride), math.ceil(96 / shape.stride))
            assert out[stream][name].shape == (1, shape.channels, *size)
    assert backbone.size_divisibility == 32
    names = [n for n, _ in backbone.named_parameters()]
    assert any(n.startswith("bottom_up.rgb.") for n in names)
    assert any(n.startswith("bottom_up.flow.") for n in names)


@pytest.mark.parametrize("message_passing", [True, False])
def test_message_passing_sends_gradient_into_flow(message_passing):
    cfg = _cfg(MESSAGE_PASSING=message_passing)
    torch.manual_seed(0)
    backbone = build_backbone(cfg)
    x = torch.randn(1, 3, K, H, H)
    feats = backbone.bottom_up_features({"rgb": x, "flow": x.flip(-1)})
    assert [f.shape for f in feats["rgb"].values()] == [f.shape for f in feats["flow"].values()]
    # A loss on the RGB stream alone reaches the flow I3D only through f_l.
    sum(f.sum() for f in feats["rgb"].values()).backward()
    flow_grads = [p.grad for p in backbone.bottom_up["flow"].parameters() if p.requires_grad]
    reached = any(g is not None and g.abs().sum() > 0 for g in flow_grads)
    assert reached == message_passing
    assert hasattr(backbone, "messages") == message_passing


def test_single_stream_backbone_has_no_messages():
    cfg = _cfg(STREAMS=["flow"], NUM_STAGES=0)
    backbone = build_backbone(cfg)
    assert backbone.streams == ["flow"] and not hasattr(backbone, "messages")
    assert list(backbone.bottom_up) == ["flow"]


@pytest.mark.parametrize("num_stages", [0, 1, 2, 3, 4])
def test_training_losses_are_finite(num_stages):
    cfg = _cfg(NUM_STAGES=num_stages)
    model = _model(cfg)
    model.train()
    with EventStorage():
        # The second key frame has no ground truth: every proposal is background.
        losses = model([_input(True, 0), _input(False, 1)])
        total = sum(losses.values())
        total.backward()
    expected = {f"loss_rpn_{k}_{s}" for k in ("cls", "loc") for s in ("rgb", "flow")}
    expected |= {f"loss_{k}_s0_{s}" for k in ("cls", "box_reg") for s in ("rgb", "flow")}
    for t in range(1, num_stages + 1):
        stream = "rgb" if t % 2 else "flow"
        expected |= {f"loss_cls_s{t}_{stream}", f"loss_box_reg_s{t}_{stream}"}
    assert set(losses) == expected
    assert all(torch.isfinite(v) for v in losses.values())
    assert len(model.roi_heads.box_heads) == 2 + num_stages
    assert len(model.roi_heads.feature_messages) == num_stages


def test_training_without_any_gt_is_finite():
    model = _model(_cfg(NUM_STAGES=2))
    with EventStorage():
        losses = model([_input(False, 3)])
    assert all(torch.isfinite(v) for v in losses.values())


@pytest.mark.parametrize("streams", [["rgb"], ["flow"]])
def test_single_stream_trains(streams):
    model = _model(_cfg(STREAMS=streams, NUM_STAGES=0))
    with EventStorage():
        losses = model([_input(True, 0)])
    assert set(losses) == {f"{k}_{streams[0]}" for k in ("loss_rpn_cls", "loss_rpn_loc")} | {
        f"loss_{k}_s0_{streams[0]}" for k in ("cls", "box_reg")
    }
    with pytest.raises(ValueError, match="needs both streams"):
        _model(_cfg(STREAMS=streams, NUM_STAGES=1))


def test_inference_outputs():
    cfg = _cfg(NUM_STAGES=4, OUTPUT_FEATURES=True)
    cfg.MODEL.PCSC.ACTIONNESS.ENABLED = True
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0
    model = _model(cfg).eval()
    inputs = [_input(True, 0), _input(False, 1, size=(H, 96))]
    # A detector's own head is untrained: it scores nothing (and so TR cannot cut with it).
    with torch.no_grad():
        assert not model(inputs)[0]["instances"].has("actionness")
    model.actionness_head.trained.fill_(True)  # as tools/train_actionness.py leaves it
    with torch.no_grad():
        outputs = model(inputs)
    assert len(outputs) == 2
    for inp, out in zip(inputs, outputs):
        inst = out["instances"]
        assert inst.image_size == (inp["height"], inp["width"])
        n = len(inst)
        assert 0 < n <= cfg.TEST.DETECTIONS_PER_IMAGE
        b = inst.pred_boxes.tensor
        assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all()
        assert (b[:, 2] <= inp["width"]).all() and (b[:, 3] <= inp["height"]).all()
        assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()
        assert inst.features.shape == (n, cfg.MODEL.ROI_BOX_HEAD.FC_DIM)
        assert inst.features.dtype == torch.float32
        assert inst.actionness.shape == (n,)
        assert ((inst.actionness >= 0) & (inst.actionness <= 1)).all()
        assert inst.pred_classes.dtype == torch.int64
        assert (inst.scores[:-1] >= inst.scores[1:]).all()
    # Without the switches the outputs are the plain contract.
    cfg.MODEL.PCSC.OUTPUT_FEATURES = False
    cfg.MODEL.PCSC.ACTIONNESS.ENABLED = False
    with torch.no_grad():
        inst = _model(cfg).eval()(inputs[:1])[0]["instances"]
    assert set(inst.get_fields()) == {"pred_boxes", "scores", "pred_classes"}


def test_actionness_head_is_frozen_and_its_trained_flag_travels_in_checkpoints(tmp_path):
    from detectron2.checkpoint import DetectionCheckpointer

    cfg = _cfg()
    cfg.TUBES.REFINE.ENABLED = True  # TR on: the head is built, for TR's training to fill
    model = _model(cfg)
    head = model.actionness_head
    assert head is not None and not any(p.requires_grad for p in head.parameters())
    assert not bool(head.trained)
    head.trained.fill_(True)
    DetectionCheckpointer(model, str(tmp_path)).save("tr")
    fresh = _model(cfg)
    DetectionCheckpointer(fresh).load(str(tmp_path / "tr.pth"))
    assert bool(fresh.actionness_head.trained)
    # A checkpoint written before the flag existed held the head only once TR had trained it.
    state = {k: v for k, v in model.state_dict().items()
             if k not in ("actionness_head.trained", "actionness_head.class_trained")}
    old = _model(cfg)
    old.actionness_head.class_trained.fill_(False)
    old.load_state_dict(state)
    assert bool(old.actionness_head.trained)
    assert bool(old.actionness_head.class_trained.all())  # nor the per-class flags: all trusted


def test_untrained_classifiers_leave_their_boxes_as_action():
    cfg = _cfg()
    cfg.TUBES.REFINE.ENABLED = True
    head = _model(cfg).actionness_head
    with torch.no_grad():
        head.bias.copy_(torch.linspace(-3, 3, head.num_classes))
    features = torch.randn(head.num_classes, head.weight.shape[1] if head.hidden_dim == 0
                           else head.hidden_weight.shape[0])
    classes = torch.arange(head.num_classes)
    expected = torch.sigmoid(head(features, classes))
    torch.testing.assert_close(head.actionness(features, classes), expected)
    head.class_trained[1::2] = False  # classes 1, 3, ... never saw their action in training
    got = head.actionness(features, classes)
    torch.testing.assert_close(got[0::2], expected[0::2])
    assert got[1::2].tolist() == [1.0] * len(got[1::2])


@pytest.mark.parametrize("num_stages,stream,other", [(4, "flow", "rgb"), (3, "rgb", "flow")])
def test_detection_features_are_the_last_stage_cooperated_feature(num_stages, stream, other):
    """Every detection, whatever stage found it, is described by the last stage: its box pooled
    from both streams, F = F^i + g_T(F^j), through stage T's box head. Computed here by hand
    from the modules, box by box, so that batching cannot change a detection's feature."""
    cfg = _cfg(NUM_STAGES=num_stages, OUTPUT_FEATURES=True)
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0
    model = _model(cfg).eval()
    inputs = [_input(True, 0)]
    with torch.no_grad():
        raw = model.inference(inputs, do_postprocess=False)[0]
        images = model.preprocess_clips(inputs)
        feats = model.backbone({s: images[s].tensor for s in model.streams})
        heads = model.roi_heads
        levels = {s: [feats[s][f] for f in heads.box_in_features] for s in model.streams}
        assert len(raw) > 5
        for i in range(0, len(raw), max(1, len(raw) // 5)):
            box = [raw.pred_boxes[i : i + 1]]
            x = heads.box_pooler(levels[stream], box)
            x = x + heads.feature_messages[f"s{num_stages}"](heads.box_pooler(levels[other], box))
            expected = heads.box_heads[f"{stream}_s{num_stages}"](x)[0]
            assert torch.allclose(raw.features[i], expected, atol=1e-5)


def test_feature_cooperation_off_is_plain_features():
    cfg = _cfg(NUM_STAGES=2)
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0
    model = _model(cfg).eval()
    off_model = _model(_cfg(FEATURE_COOPERATION=False))
    assert not any("feature_messages" in n for n, _ in off_model.named_parameters())
    inputs = [_input(True, 0)]
    with torch.no_grad():
        # A strong g_t changes the detections ...
        for m in model.roi_heads.feature_messages.values():
            m.restore.weight.normal_(std=1.0)
        with_coop = model(inputs)[0]["instances"]
        # g_t with a zero output conv adds nothing: the same as no feature cooperation.
        for m in model.roi_heads.feature_messages.values():
            m.restore.weight.zero_()
        zeroed = model(inputs)[0]["instances"]
        model.roi_heads.feature_messages = torch.nn.ModuleDict()
        off = model(inputs)[0]["instances"]
    assert torch.allclose(zeroed.pred_boxes.tensor, off.pred_boxes.tensor)
    assert torch.allclose(zeroed.scores, off.scores)
    assert not torch.allclose(with_coop.scores, off.scores, atol=1e-4)


@pytest.mark.parametrize("coop", [True, False])
def test_proposal_cooperation_switch(coop, monkeypatch):
    calls = []
    original = pcsc_cascade.cooperate_proposals

    def spy(own, other, **kwargs):
        out = original(own, other, **kwargs)
        calls.append((len(own[0]), len(out), kwargs["use_other"]))
        return out

    monkeypatch.setattr(pcsc_cascade, "cooperate_proposals", spy)
    cfg = _cfg(NUM_STAGES=2, PROPOSAL_COOPERATION=coop, COOP_SCORE_THRESH=0.0, COOP_TOPK=1000)
    model = _model(cfg).eval()
    with torch.no_grad():
        model([_input(True, 0)])
    assert [c[2] for c in calls] == [coop, coop]
    if coop:
        assert all(n_out > n_own_cap for n_own_cap, n_out, _ in calls)
    else:
        assert all(n_out <= n_own for n_own, n_out, _ in calls)


def test_overfits_one_clip():
    # Two streams, one cooperation stage, one clip with a fixed GT box: the detector must be
    # able to fit it. Adam makes "a few dozen iterations" enough for the RPNs too.
    cfg = _cfg(NUM_STAGES=1)
    cfg.MODEL.RPN.POST_NMS_TOPK_TRAIN = 30
    model = _model(cfg)
    inputs = [_input(True, 0)]
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    history = []
    with EventStorage() as storage:
        for _ in range(40):
            loss = sum(model(inputs).values())
            opt.zero_grad()
            loss.backward()
            opt.step()
            storage.step()
            history.append(loss.item())
    assert all(math.isfinite(v) for v in history)
    assert sum(history[-5:]) / 5 < 0.4 * history[0], history


def test_temporal_pool_center_takes_the_key_frame_step():
    cfg = _cfg()
    cfg.MODEL.PCSC.TEMPORAL_POOL = "center"
    torch.manual_seed(0)
    backbone = build_backbone(cfg)
    x = torch.arange(2 * 4 * 5 * 6, dtype=torch.float32).view(1, 2, 4, 5, 6)  # T' = 4
    # K = 8 frames: the key frame is the 5th (index 4), i.e. step 4 // 2 = 2 of 4 steps, step 1
    # of 2 and step 0 of 1.
    assert torch.equal(backbone._to_key_frame(x, 8), x[:, :, 2])
    assert torch.equal(backbone._to_key_frame(x[:, :, :2], 8), x[:, :, 1])
    assert torch.equal(backbone._to_key_frame(x[:, :, :1], 8), x[:, :, 0])
    cfg.MODEL.PCSC.TEMPORAL_POOL = "mean"
    assert torch.allclose(build_backbone(cfg)._to_key_frame(x, 8), x.mean(dim=2))
    cfg.MODEL.PCSC.TEMPORAL_POOL = "max"
    with pytest.raises(ValueError, match="TEMPORAL_POOL"):
        build_backbone(cfg)


def test_key_frame_streams_see_only_the_key_frame():
    cfg = _cfg(KEY_FRAME_STREAMS=["rgb"])
    torch.manual_seed(0)
    backbone = build_backbone(cfg)
    g = torch.Generator().manual_seed(0)
    rgb, flow = torch.randn(2, 1, 3, K, H, H, generator=g)
    still = rgb[:, :, K // 2 : K // 2 + 1].repeat(1, 1, K, 1, 1)  # the (K // 2)-th frame, K times
    other = rgb.clone()
    other[:, :, K // 2 + 1 :] = 0  # other frames around the same key frame
    feats = [backbone.bottom_up_features({"rgb": x, "flow": flow}) for x in (rgb, still, other)]
    for name in feats[0]["rgb"]:
        # The RGB stream sees the still key frame whatever the clip holds...
        assert torch.equal(feats[0]["rgb"][name], feats[1]["rgb"][name])
        assert torch.equal(feats[0]["rgb"][name], feats[2]["rgb"][name])
    # ...through a still I3D (same parameters), while the flow stream still sees its clip.
    assert backbone.bottom_up["rgb"].still and not backbone.bottom_up["flow"].still
    plain = build_backbone(_cfg())
    plain.load_state_dict(backbone.state_dict())
    ref = plain.bottom_up_features({"rgb": rgb, "flow": flow})
    for name in ref["flow"]:
        assert torch.equal(ref["flow"][name], feats[0]["flow"][name])
        assert not torch.allclose(ref["rgb"][name], feats[0]["rgb"][name])
    with pytest.raises(ValueError, match="KEY_FRAME_STREAMS"):
        build_backbone(_cfg(KEY_FRAME_STREAMS=["depth"]))


def test_stage_unions_in_one_pass_equal_one_run_per_test_stages():
    cfg = _cfg(NUM_STAGES=4)
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0
    cfg.MODEL.PCSC.COOP_SCORE_THRESH = -1.0  # every stage receives boxes
    model = _model(cfg).eval()
    inputs = [_input(True, 0), _input(False, 1)]
    with torch.no_grad():
        unions = model.inference_stage_unions(inputs, [0, 2, 4])
        for t in (0, 2, 4):
            model.roi_heads.test_stages = t
            for one, out in zip(unions, model(inputs)):
                ref = out["instances"]
                assert len(one[t]) == len(ref) > 0
                assert torch.equal(one[t].pred_boxes.tensor, ref.pred_boxes.tensor)
                assert torch.equal(one[t].scores, ref.scores)
    with pytest.raises(ValueError, match="0..4"):
        model.inference_stage_unions(inputs, [5])
