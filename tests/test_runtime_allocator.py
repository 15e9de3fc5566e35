"""spgnet.runtime.allocator: with glibc told to keep freed memory, the big activations of repeated
forward passes are served from the heap without faulting their pages in again."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from spgnet.runtime.allocator import ENV, keep_freed_memory
from spgnet.errors import SpgnetError

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc tuning")

#: Runs a small conv net whose activations are 64 MiB each (above glibc's largest dynamic mmap
#: threshold, 32 MiB), three passes to warm up, then prints the minor page faults of five more:
#: 5 passes x 4 layers x 16384 pages if every activation is a fresh mmap.
SCRIPT = """
import resource, torch
from spgnet.runtime.allocator import keep_freed_memory
applied = keep_freed_memory()
net = torch.nn.Sequential(*[torch.nn.Conv2d(16, 16, 1) for _ in range(4)]).eval()
x = torch.randn(1, 16, 1024, 1024)
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
with torch.inference_mode():
    for _ in range(3):
        net(x)
    before = faults()
    for _ in range(5):
        net(x)
print(applied, faults() - before)
"""


def _faults(setting: str) -> tuple[str, int]:
    env = {**os.environ, ENV: setting, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, check=True)
    applied, faults = out.stdout.split()
    return applied, int(faults)


def test_repeated_passes_reuse_their_buffers_without_page_faults():
    applied, kept = _faults("keep")
    assert applied == "True"
    assert kept < 2000  # 64 MiB is 16384 pages


def test_system_setting_leaves_glibc_alone_and_every_pass_faults_again():
    applied, system = _faults("system")
    assert applied == "False"
    assert system > 5 * 4 * 16384 // 2


def test_an_unknown_setting_is_an_error_naming_the_variable(monkeypatch):
    monkeypatch.setenv(ENV, "jemalloc")
    with pytest.raises(SpgnetError, match=f"{ENV}='jemalloc': unknown value"):
        keep_freed_memory()
