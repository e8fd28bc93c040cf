"""Config keys of pcsc_d2. Every key is documented; symbols refer to the PCSC paper."""
from detectron2.config import CfgNode as CN


def add_pcsc_config(cfg: CN) -> None:
    """Add the keys of pcsc_d2 to a Detectron2 config, in place.

    Args:
        cfg: a config from ``detectron2.config.get_cfg()``.
    """
    _add_input_config(cfg)
    _add_model_config(cfg)
    _add_tubes_config(cfg)
    _add_eval_config(cfg)
    _add_solver_config(cfg)


def _add_input_config(cfg: CN) -> None:
    # K: the number of neighbouring frames centred on the key frame, fed to both streams
    # (indices clamped at the ends of the video).
    cfg.INPUT.NUM_FRAMES = 8
    # Probability of a horizontal flip at training time (applied to every frame of both
    # streams; the x-flow channel is inverted too).
    cfg.INPUT.FLIP_PROB = 0.5
    # Train on every n-th annotated frame as key frame (the paper's mini-UCF uses 10).
    cfg.DATASETS.TRAIN_KEY_FRAME_STRIDE = 1
    # Test on every n-th frame of every test video (1 = every frame, as the field reports).
    cfg.DATASETS.TEST_KEY_FRAME_STRIDE = 1


def _add_model_config(cfg: CN) -> None:
    cfg.MODEL.I3D = CN()
    # I3D endpoints given to the FPN: C2..C5 of the paper (strides 4, 8, 16, 32).
    cfg.MODEL.I3D.OUT_FEATURES = ["Conv3d_2c_3x3", "Mixed_3c", "Mixed_4f", "Mixed_5c"]
    # Freeze the first N units of I3D: 0 = nothing; 1 = Conv3d_1a_7x7; 2 = up to
    # Conv3d_2b_1x1; 3 = up to Conv3d_2c_3x3 (the stem); 4 = up to Mixed_3c; ...
    cfg.MODEL.I3D.FREEZE_AT = 3
    # Normalization of I3D: "FrozenBN" (usual for detection fine-tuning) or "BN".
    cfg.MODEL.I3D.NORM = "FrozenBN"

    cfg.MODEL.PCSC = CN()
    # Streams of the detector: ["rgb", "flow"] for PCSC and late fusion; ["rgb"] or
    # ["flow"] for the single-stream I3D-FPN Faster R-CNN baselines.
    cfg.MODEL.PCSC.STREAMS = ["rgb", "flow"]
    # Image-level message passing Flow -> RGB on C2..C5: C_l^rgb += f_l(C_l^flow).
    cfg.MODEL.PCSC.MESSAGE_PASSING = True
    # How each I3D map C_l (N, C, T', H, W) becomes the key frame's 2D map: "mean" over its T'
    # time steps (the paper's: the whole clip's context), or "center", the time step of the
    # key frame (a moving actor is not smeared over its positions in the clip).
    cfg.MODEL.PCSC.TEMPORAL_POOL = "mean"
    # Pool RoIs and place anchors at the true centres of I3D's feature cells: TF 'SAME' padding
    # centres the cells of C2..C5 1.5, 3.5, 7.5, 7.5 pixels right of and below where detectron2
    # assumes them (pcsc_d2.modeling.backbone.grid). Anchors move only with
    # MODEL.ANCHOR_GENERATOR.NAME "PCSCAnchorGenerator" (Base-PCSC.yaml). Off: detectron2's
    # grid, as every detectron2 model places it. Off by default: over 3 seeds of the synthetic
    # benchmark it left boxes and frame-mAP unchanged within the spread and lowered
    # video-mAP@0.5 with TR in every seed (README, "Why the boxes were loose").
    cfg.MODEL.PCSC.ALIGN_FEATURE_GRID = False
    # Streams that see only the key frame instead of the K-frame clip, e.g. ["rgb"]: their I3D
    # runs as on a still video of that frame (temporal taps summed into 2D kernels; one time
    # step per layer, where a K = 8 clip has 4 in the early layers). Time-averaged features of
    # a clip smear a moving actor over its positions in the clip, and boxes regressed from them
    # miss its extent at the key frame (README, "Why the boxes were loose"); the key frame shows
    # it sharp, and the flow stream (and its messages to RGB) still carries the motion. Not in
    # the paper (its I3D streams both see the clip), so off by default.
    cfg.MODEL.PCSC.KEY_FRAME_STREAMS = []
    # Channel reduction factor inside f_l and g_t (1x1 conv -> ReLU -> 1x1 conv).
    cfg.MODEL.PCSC.MESSAGE_REDUCTION = 4
    # T: number of cross-stream cooperation stages after stage 0 (0..4). Odd stages
    # improve RGB, even stages improve Flow. 0 with two streams = late fusion.
    cfg.MODEL.PCSC.NUM_STAGES = 4
    # Proposal cooperation: P_t^i = B_{t-1}^i U B^j (off: each stage uses its own stream's
    # latest boxes only).
    cfg.MODEL.PCSC.PROPOSAL_COOPERATION = True
    # Feature cooperation: F_t^i = F^i + g_t(F^j) at P_t^i (off: F_t^i = F^i).
    cfg.MODEL.PCSC.FEATURE_COOPERATION = True
    # Boxes passed between stages keep only detections with a score above this.
    cfg.MODEL.PCSC.COOP_SCORE_THRESH = 0.05
    # NMS IoU threshold for the stage's own stream's boxes in proposal cooperation.
    cfg.MODEL.PCSC.COOP_NMS_OWN = 0.7
    # NMS IoU threshold (lower) for the other stream's boxes in proposal cooperation.
    cfg.MODEL.PCSC.COOP_NMS_OTHER = 0.5
    # At most this many boxes per stream are passed to the next stage (per image).
    cfg.MODEL.PCSC.COOP_TOPK = 300
    # Training: the predictions on the GT boxes that sampling adds to each stage's proposals are
    # also passed to the next stages' proposal cooperation (off: only predictions on real
    # proposals are, as at test time, where there is no GT box to add).
    cfg.MODEL.PCSC.PASS_GT_PROPOSALS = False
    # IoU above which a proposal is foreground in every stage (the paper: 0.5).
    cfg.MODEL.PCSC.STAGE_IOU_THRESH = 0.5
    # Per-stage foreground IoU, T + 1 values for stages t = 0..T (not in the paper); empty: every
    # stage uses STAGE_IOU_THRESH. Rising values (as Cascade R-CNN's 0.5, 0.6, 0.7) train the
    # later stages, which receive near-object boxes, to tighten them and to score loose ones low.
    cfg.MODEL.PCSC.STAGE_IOU_THRESHS = []
    # Per-stage box-delta weights (wx, wy, ww, wh), T + 1 tuples for stages t = 0..T; empty: every
    # stage uses ROI_BOX_HEAD.BBOX_REG_WEIGHTS. Later stages regress smaller deltas, which larger
    # weights scale up (Cascade R-CNN: (10, 10, 5, 5), (20, 20, 10, 10), (30, 30, 15, 15)).
    cfg.MODEL.PCSC.STAGE_BBOX_REG_WEIGHTS = []
    # Stages used at test time: union of stages 0..t of both streams; -1 = NUM_STAGES.
    cfg.MODEL.PCSC.TEST_STAGES = -1
    # Box voting over that union (not in the paper): > 0 replaces each detection kept by the
    # final NMS with the score-weighted mean of all stages' boxes of its class overlapping it
    # by at least this IoU; 0 keeps NMS's boxes.
    cfg.MODEL.PCSC.TEST_BOX_VOTING = 0.0
    # What a box's vote weighs: "class", its score for the kept detection's class; "foreground",
    # 1 - its background probability, so that a stage that localises well but classifies
    # poorly (RGB stage 0 on motion classes) still places the box.
    cfg.MODEL.PCSC.TEST_BOX_VOTING_WEIGHT = "class"
    # IoU-aware scores (pcsc_d2.modeling.roi_heads.iou_scoring): every head also predicts the
    # IoU of its box with the object, trained on foreground proposals (LOSS_WEIGHT), and scores a
    # box p_k^(1 - ALPHA) * IoU^ALPHA, so the best-fitting box of an object wins NMS and linking.
    # Not in the paper; off by default.
    cfg.MODEL.PCSC.IOU_SCORING = CN()
    cfg.MODEL.PCSC.IOU_SCORING.ENABLED = False
    cfg.MODEL.PCSC.IOU_SCORING.ALPHA = 0.5
    cfg.MODEL.PCSC.IOU_SCORING.LOSS_WEIGHT = 1.0
    # Put each detection's cooperated RoI feature (the last stage's F^i + g_T(F^j) at its box,
    # whatever stage found it) in Instances.features at inference (TR's training samples).
    cfg.MODEL.PCSC.OUTPUT_FEATURES = False

    cfg.MODEL.PCSC.ACTIONNESS = CN()
    # Build the class-specific actionness classifiers of temporal refinement (also built when
    # TUBES.REFINE.ENABLED). Once tools/train_actionness.py has trained them (a flag saved in
    # the checkpoint), inference adds Instances.actionness (probability that the box shows its
    # class's action); the detector's own training leaves them untouched.
    cfg.MODEL.PCSC.ACTIONNESS.ENABLED = False
    # Hidden width of each per-class binary classifier (0 = a linear classifier).
    cfg.MODEL.PCSC.ACTIONNESS.HIDDEN_DIM = 256


def _add_tubes_config(cfg: CN) -> None:
    cfg.TUBES = CN()
    # Online linking (Singh et al. 2017); defaults as their released code.
    # Detections with a score below this are dropped before linking.
    cfg.TUBES.SCORE_THRESH = 0.001
    # Per class and frame: keep the top N by score, NMS, then keep the top M.
    cfg.TUBES.PRE_NMS_TOPK = 50
    cfg.TUBES.NMS_THRESH = 0.45
    cfg.TUBES.POST_NMS_TOPK = 10
    # A tube may take a detection whose IoU with its last box is at least this (a gate).
    cfg.TUBES.IOU_THRESH = 0.1
    # A tube that has matched nothing for this many consecutive frames ends.
    cfg.TUBES.MAX_MISSED = 3
    # Tubes with fewer boxes than this are dropped.
    cfg.TUBES.MIN_LENGTH = 5
    # A tube's score is the mean of its top-k box scores.
    cfg.TUBES.SCORE_TOPK = 40
    # Boxes of a tube's frames between two matched detections (frames it missed, or frames not
    # processed with DATASETS.TEST_KEY_FRAME_STRIDE > 1): "repeat" the earlier match's box (Singh
    # et al.'s released code) or "linear", interpolated between the two matches (a moving actor
    # is rarely where it was one or two frames before).
    cfg.TUBES.GAP_FILL = "repeat"

    cfg.TUBES.REFINE = CN()
    # Temporal refinement (TR) with the actionness classifiers (off for J-HMDB: trimmed).
    cfg.TUBES.REFINE.ENABLED = False
    # Window (frames, odd) of the median filter along the tube's actionness scores.
    cfg.TUBES.REFINE.MEDIAN_WINDOW = 9
    # Boxes whose filtered actionness is below this are dropped.
    cfg.TUBES.REFINE.THRESH = 0.5
    # How low boxes shorten a tube: "ends" keeps the span from the first to the last box above
    # THRESH (temporal boundary refinement, the paper's purpose; it never adds a tube); "split"
    # drops every low box, bridging dips of at most MAX_GAP boxes and splitting the tube at
    # longer ones. Every evaluation reports both (video_mAP@*/TR-ends, /TR-split); over seeds
    # they differ by less than the seed spread (README, Results), so the simpler one is default.
    cfg.TUBES.REFINE.MODE = "ends"
    # With MODE "split": a tube is split where more than this many consecutive boxes were dropped.
    cfg.TUBES.REFINE.MAX_GAP = 5
    # Pieces shorter than this after refinement are discarded.
    cfg.TUBES.REFINE.MIN_LENGTH = 5
    # Training the actionness classifiers: run the detector on every n-th frame of the
    # training videos (1 = every frame, as the paper), link, label, train.
    cfg.TUBES.REFINE.TRAIN_FRAME_STRIDE = 1
    # Optimisation of the actionness classifiers (the detector stays frozen): epochs over the
    # collected tube boxes, class-balanced (action and non-action boxes of a class weigh the
    # same), SGD with a cosine decay from TRAIN_LR.
    cfg.TUBES.REFINE.TRAIN_EPOCHS = 20
    cfg.TUBES.REFINE.TRAIN_BATCH_SIZE = 256
    cfg.TUBES.REFINE.TRAIN_LR = 0.01
    # This fraction of the training videos is held out (seeded); the classifiers keep the
    # epoch with the lowest balanced loss on their boxes. 0 trains on all, keeping the last.
    cfg.TUBES.REFINE.VAL_FRACTION = 0.2


def _add_eval_config(cfg: CN) -> None:
    cfg.TEST.PCSC = CN()
    # Average precision convention: "act" (trapezoid over raw PR points, ACT / the field)
    # or "voc" (VOC-interpolated). Every report names the one it used.
    cfg.TEST.PCSC.AP_CONVENTION = "act"
    # IoU threshold of frame-AP.
    cfg.TEST.PCSC.FRAME_IOU = 0.5
    # Tube IoU thresholds of video-AP reported on their own; 0.5:0.95 is always added.
    cfg.TEST.PCSC.VIDEO_IOUS = [0.2, 0.5, 0.75]
    # Per-video tube NMS (tube IoU) before video-AP.
    cfg.TEST.PCSC.TUBE_NMS = 0.3
    # Key frames per inference batch (per process). Batches make better use of a GPU, and of
    # MKL-DNN's 3D convolutions on a CPU (PyTorch takes a slower path for small batch-1 maps).
    cfg.TEST.PCSC.BATCH_SIZE = 1
    # Write detections, tubes, metrics (JSON) and a PR-curve figure to OUTPUT_DIR.
    cfg.TEST.PCSC.WRITE_OUTPUTS = True
    # Inference (evaluation, TR samples, the demo) under autocast to SOLVER.AMP.PRECISION; meant
    # for GPUs (bf16 is slower than fp32 on CPUs without bf16 units). Outputs stay fp32.
    cfg.TEST.PCSC.AMP = False


def _add_solver_config(cfg: CN) -> None:
    # Mixed precision of training with SOLVER.AMP.ENABLED (and of inference with TEST.PCSC.AMP):
    # "bfloat16" (no loss scaling needed) or "float16" (with detectron2's gradient scaler).
    cfg.SOLVER.AMP.PRECISION = "bfloat16"
    # Periodic checkpoints (model_XXXXXXX.pth, every SOLVER.CHECKPOINT_PERIOD iterations) kept in
    # OUTPUT_DIR: the newest N, earlier runs' included; 0 keeps all. model_final.pth is always kept.
    cfg.SOLVER.CHECKPOINT_MAX_KEEP = 3
