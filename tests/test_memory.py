"""Memory that scales with the data: statistics in chunks, decoded files written into one tensor,
datasets too large for dataset.max_memory_mb streamed, and caches that notice changed files."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

from src.data import channel_stats
from tests.conftest import ROOT


def peak_extra_mb(code: str, setup: str) -> float:
    """Peak resident memory added by ``code`` after ``setup``, in a fresh Python process."""
    script = textwrap.dedent(f"""
        import resource
        {setup}
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        {code}
        print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return float(out.stdout.split()[-1])


@pytest.mark.parametrize("shape", [(300, 1, 8, 8), (64, 3, 9, 7)])
def test_channel_stats_equal_the_float_formula(shape):
    images = torch.randint(0, 256, shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    x = images.double().div(255).transpose(0, 1).flatten(1)
    mean, std = channel_stats(images)
    torch.testing.assert_close(torch.tensor(mean, dtype=torch.float64), x.mean(dim=1), rtol=0, atol=1e-12)
    torch.testing.assert_close(torch.tensor(std, dtype=torch.float64), x.std(dim=1), rtol=0, atol=1e-12)


def test_channel_stats_make_no_float_copy_of_the_images():
    """128 MB of uint8 images: a float copy alone would add 512 MB (the old code made two)."""
    setup = ("import torch; from src.data import channel_stats; "
             "images = torch.full((43_690, 3, 32, 32), 7, dtype=torch.uint8); images[::2] = 200")
    extra = peak_extra_mb("mean, std = channel_stats(images)", setup)
    assert extra < 80, f"channel_stats added {extra:.0f} MB for 128 MB of images"
