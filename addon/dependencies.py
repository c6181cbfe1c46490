"""Which third-party packages the farm needs are missing, named as pip names them.

They come as wheels inside the extension; a broken or partial install must be a
clear warning in the panel, not an ImportError traceback on the first click.
"""

from __future__ import annotations

import importlib

#: Import name -> the package a user (or the extension's wheels) would install.
REQUIRED = {
    "python_pachyderm": "python-pachyderm",
    "grpc": "grpcio",
    "google.protobuf": "protobuf",
    "cv2": "opencv-python-headless",
    "OpenEXR": "OpenEXR",
    "numpy": "numpy",
}


def missing() -> list[str]:
    """Package names that cannot be imported; cheap once they are imported."""
    absent = []
    for module, package in REQUIRED.items():
        try:
            importlib.import_module(module)
        except ImportError:
            absent.append(package)
    return absent


def message(absent: list[str]) -> str:
    return f"Missing dependencies: {', '.join(absent)}. Reinstall the Pachyderm Render Farm extension"
