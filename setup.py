#!/usr/bin/env python
"""pcsc_d2: Progressive Cross-stream Cooperation (CVPR 2019) as a Detectron2 extension.

detectron2 is not an install requirement: it has no release on PyPI under its name.
``bash tools/setup_env.sh`` installs it (see README.md); importing pcsc_d2 without it
raises an ImportError that says how.
"""
from setuptools import find_packages, setup

setup(
    name="pcsc_d2",
    version="0.1.0",
    description="Progressive Cross-stream Cooperation for spatio-temporal action localization",
    long_description=open("README.md").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(exclude=("tests", "tests.*", "benchmarks", "tools")),
    install_requires=[
        "torch>=2.0",
        "torchvision",
        # The oldest checked set is numpy 1.26.4 with OpenCV 4.11.0.86 (`make test-pins` runs the
        # suite on it and on the newest releases); numpy 2 works too.
        "numpy>=1.26.4",
        # contrib: cv2.optflow's TV-L1 optical flow.
        "opencv-contrib-python-headless>=4.11.0.86",
        "fvcore",
        "iopath",
        "pycocotools",
        "tabulate",
        "tqdm",
        "matplotlib",
        "scipy",
        "Pillow",
    ],
    extras_require={"test": ["pytest"]},
    license="Apache-2.0",
)
