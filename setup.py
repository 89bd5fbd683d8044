"""Builds the C++ extension `torchrec_ascend._C` through CMake.

The extension must be compiled against the torch already installed (the pinned CPU
build), so install with `pip install --no-build-isolation -e .`.
"""

import os
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


class CMakeExtension(Extension):
    def __init__(self, name: str) -> None:
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    def build_extension(self, ext: Extension) -> None:
        import pybind11
        import torch

        out_path = Path(self.get_ext_fullpath(ext.name)).resolve()
        build_dir = (
            ROOT / "build" / f"cmake-{sys.version_info.major}{sys.version_info.minor}"
        )
        build_dir.mkdir(parents=True, exist_ok=True)
        config = [
            f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path};{pybind11.get_cmake_dir()}",
            f"-DPython3_EXECUTABLE={sys.executable}",
            f"-DTRA_OUTPUT_DIR={out_path.parent}",
            f"-DTRA_OUTPUT_NAME={out_path.name}",
            "-DCMAKE_BUILD_TYPE=Release",
        ]
        jobs = str(os.cpu_count() or 2)
        subprocess.check_call(["cmake", "-S", str(ROOT), "-B", str(build_dir), *config])
        subprocess.check_call(["cmake", "--build", str(build_dir), "-j", jobs])


setup(
    ext_modules=[CMakeExtension("torchrec_ascend._C")],
    cmdclass={"build_ext": CMakeBuild},
)
