#!/usr/bin/env python
"""Backward pass of I3D's 3x3x3 convolutions on a CPU: PyTorch's default against oneDNN.

    python benchmarks/conv3d_backward.py [--threads 1 2] [--repeats 6]

For one clip, PyTorch's ``convolution_backward`` runs ``slow_conv3d``'s backward on I3D's 3x3x3
kernels even when the forward ran on oneDNN; ``pcsc_d2.modeling.backbone.conv3d_cpu._OneDNNConv3d``
hands it oneDNN tensors instead where the output has at least
``ONEDNN_BACKWARD_MIN_POSITIONS`` positions. This prints, per trainable I3D shape at the two
frame sizes the project trains at (240x320: UCF-101-24, J-HMDB-21 and the speed benchmark;
120x160: ``make run``) and per thread count, the milliseconds of the forward, of the default
backward and of the oneDNN backward (conversions included), best of ``--repeats``, and which
one the model uses. Prints figures, asserts nothing.
"""
import argparse
import math
import time

import torch

from pcsc_d2.modeling.backbone.conv3d_cpu import ONEDNN_BACKWARD_MIN_POSITIONS

CL = torch.channels_last_3d
# (Cin, Cout, T', H', W') of the 3x3x3 units from Mixed_3b on, at 240x320 with K = 8; halve
# H' and W' for 120x160.
SHAPES = [(16, 32, 4, 32, 40), (32, 96, 4, 32, 40), (96, 128, 4, 32, 40), (128, 192, 4, 32, 40),
          (96, 208, 2, 16, 20), (160, 320, 2, 16, 20), (192, 384, 1, 8, 10)]


def best_ms(fn, repeats: int) -> float:
    fn()  # warm-up: oneDNN builds its kernels on the first call
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times) * 1e3


def measure(cin: int, cout: int, size, repeats: int):
    """(forward, default backward, oneDNN backward) in ms for a (1, cin, *size) clip."""
    x = torch.randn(1, cin, *size).contiguous(memory_format=CL)
    w = torch.randn(cout, cin, 3, 3, 3).contiguous(memory_format=CL)
    g = torch.randn(1, cout, *size).contiguous(memory_format=CL)
    args = ([1, 1, 1], [1, 1, 1], [1, 1, 1], False, [0, 0, 0], 1, [True, True, False])

    def forward():
        torch.ops.aten.mkldnn_convolution(x, w, None, [1, 1, 1], [1, 1, 1], [1, 1, 1], 1)

    def default():
        torch.ops.aten.convolution_backward(g, x, w, None, *args)

    def onednn():
        gx, _, _ = torch.ops.aten.convolution_backward(g.to_mkldnn(), x.to_mkldnn(), w, None, *args)
        gx.to_dense().contiguous(memory_format=CL)

    return best_ms(forward, repeats), best_ms(default, repeats), best_ms(onednn, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=6)
    args = parser.parse_args()
    print(f"3x3x3 convolution, one clip, fp32; ms, best of {args.repeats}; the model takes "
          f"oneDNN's backward from {ONEDNN_BACKWARD_MIN_POSITIONS} output positions on")
    print(f"{'threads':>7} {'Cin->Cout':>10} {'T x H x W':>10} {'forward':>8} {'default':>8} "
          f"{'oneDNN':>8} {'speed-up':>8}  used")
    for threads in args.threads:
        torch.set_num_threads(threads)
        for scale in (1, 2):
            for cin, cout, t, h, w in SHAPES:
                size = (t, h // scale, w // scale)
                fwd, default, onednn = measure(cin, cout, size, args.repeats)
                used = "oneDNN" if math.prod(size) >= ONEDNN_BACKWARD_MIN_POSITIONS else "default"
                print(f"{threads:>7} {f'{cin}->{cout}':>10} {'x'.join(map(str, size)):>10} "
                      f"{fwd:8.2f} {default:8.2f} {onednn:8.2f} {default / onednn:7.2f}x  {used}")


if __name__ == "__main__":
    main()
