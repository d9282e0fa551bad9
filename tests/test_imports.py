"""Importing the harness and every adapter must not import torch (or any model library)."""

import subprocess
import sys


def test_no_heavy_import_at_import_time(subprocess_env: dict[str, str]) -> None:
    code = (
        "import sys, harness, harness.cli, adapters, metrics; adapters.discover(); harness.cli.build_parser();"
        "heavy = [m for m in ('torch', 'cellpose', 'ultralytics', 'segment_anything', 'segmentation_models_pytorch',"
        " 'peft', 'cv2') if m in sys.modules]; print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env, check=True)
    assert out.stdout.strip() == ""


def test_network_is_blocked_in_tests() -> None:
    import socket

    import pytest

    with pytest.raises(OSError, match="blocked"):
        socket.create_connection(("example.org", 80), timeout=1)
