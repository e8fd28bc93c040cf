"""Speed and peak memory of the PCSC detector: training iterations/s and inference key frames/s.

Random uint8 clips (K frames at HxW, both streams) with one GT box per key frame; the model is
randomly initialised (speed does not depend on the weights). Each measurement runs in a fresh
process so that the CPU peak (ru_maxrss) belongs to it alone.

    python benchmarks/model_speed.py                     # CPU, K=8 at 240x320, T = 0 and 4
    python benchmarks/model_speed.py --device cuda       # GPU, bf16 autocast
    python benchmarks/model_speed.py --profile --stages 4 --iters 3
    python benchmarks/model_speed.py --config-file configs/pcsc_synthetic.yaml --height 120 \
        --width 160 --batch 2 --stages 4            # seconds per iteration of the synthetic run
"""
import argparse
import multiprocessing as mp
import os
import resource
import sys
import time

import torch

_CONFIG = os.path.join(os.path.dirname(__file__), "..", "configs", "Base-PCSC.yaml")


def _build(args, num_stages: int):
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    import pcsc_d2.modeling  # noqa: F401
    from pcsc_d2.config import add_pcsc_config

    cfg = get_cfg()
    add_pcsc_config(cfg)
    cfg.merge_from_file(args.config_file)
    if args.config_file == _CONFIG:
        cfg.MODEL.ROI_HEADS.NUM_CLASSES = 24  # UCF-101-24's head

    cfg.MODEL.PCSC.NUM_STAGES = num_stages
    cfg.MODEL.DEVICE = args.device
    torch.manual_seed(0)
    return build_model(cfg)


def _inputs(args):
    from detectron2.structures import Boxes, Instances

    g = torch.Generator().manual_seed(0)
    batch = []
    for _ in range(args.batch):
        inst = Instances((args.height, args.width))
        inst.gt_boxes = Boxes(torch.tensor([[60.0, 40.0, 180.0, 220.0]]))
        inst.gt_classes = torch.tensor([3])
        shape = (3, args.frames, args.height, args.width)
        batch.append(
            {
                "rgb": torch.randint(0, 256, shape, generator=g, dtype=torch.uint8),
                "flow": torch.randint(0, 256, shape, generator=g, dtype=torch.uint8),
                "instances": inst,
                "height": args.height,
                "width": args.width,
            }
        )
    return batch


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _measure(args, num_stages: int, mode: str, queue) -> None:
    from detectron2.utils.events import EventStorage

    torch.set_num_threads(args.threads)
    model = _build(args, num_stages)
    inputs = _inputs(args)
    cuda = args.device.startswith("cuda")
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda and not args.fp32)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step():
        if mode == "train":
            with autocast:
                loss = sum(model(inputs).values())
            opt.zero_grad()
            loss.backward()
            opt.step()
        else:
            with torch.no_grad(), autocast:
                model(inputs)

    model.train(mode == "train")
    with EventStorage():
        for _ in range(args.warmup):
            step()
        _sync(args.device)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        if args.profile:
            from torch.profiler import ProfilerActivity, profile

            acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
            with profile(activities=acts) as prof:
                for _ in range(args.iters):
                    step()
                _sync(args.device)
            key = "cuda_time_total" if cuda else "cpu_time_total"
            print(f"--- profile: T={num_stages} {mode} ---")
            print(prof.key_averages().table(sort_by=key, row_limit=args.profile_rows))
        start = time.perf_counter()
        for _ in range(args.iters):
            step()
        _sync(args.device)
        elapsed = time.perf_counter() - start
    if cuda:
        peak = torch.cuda.max_memory_allocated() / 2**30
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    queue.put((args.iters * args.batch / elapsed, peak))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-file", default=_CONFIG, help="default: configs/Base-PCSC.yaml")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--stages", type=int, nargs="+", default=[0, 4], help="NUM_STAGES")
    parser.add_argument("--frames", type=int, default=8, help="K")
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--batch", type=int, default=1, help="key frames per iteration")
    parser.add_argument("--iters", type=int, default=5, help="timed iterations")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--fp32", action="store_true", help="no bf16 autocast on GPU")
    parser.add_argument("--profile", action="store_true", help="print a torch.profiler table")
    parser.add_argument("--profile-rows", type=int, default=25)
    args = parser.parse_args(argv)

    ctx = mp.get_context("spawn")
    cuda = args.device.startswith("cuda")
    precision = "bf16 autocast" if cuda and not args.fp32 else "fp32"
    name = torch.cuda.get_device_name() if cuda else f"CPU, {args.threads} threads"
    print(
        f"PCSC model speed on {name} ({precision}); K={args.frames} at "
        f"{args.height}x{args.width}, batch {args.batch}, {args.iters} timed iterations"
    )
    peak_name = "peak GPU memory (GiB)" if cuda else "peak RSS (GiB)"
    print(f"{'T':>3} {'mode':>9} {'key frames/s':>13} {peak_name:>22}")
    for num_stages in args.stages:
        for mode in ("train", "inference"):
            queue = ctx.Queue()
            proc = ctx.Process(target=_measure, args=(args, num_stages, mode, queue))
            proc.start()
            proc.join()
            if proc.exitcode != 0:
                sys.exit(f"measurement T={num_stages} {mode} failed (exit code {proc.exitcode})")
            rate, peak = queue.get()
            print(f"{num_stages:>3} {mode:>9} {rate:>13.3f} {peak:>22.2f}", flush=True)


if __name__ == "__main__":
    main()
