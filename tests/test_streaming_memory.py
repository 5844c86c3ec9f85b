"""Peak memory of a streamed weight-only comparison: bounded by the largest tensor, not the model.

Measured in a fresh interpreter: its RSS after imports and a warm-up comparison is the baseline;
the peak RSS (VmHWM, reset at the baseline; ``getrusage`` maxrss is printed too) less resident
file pages (shared libraries, which memory pressure evicts and the run faults back in) minus that
baseline's anonymous memory must
stay below twice the largest tensor (the one being read while the last is still referenced by the
consumer's loop variable) plus a margin of 64 MiB: the compute's workspace (two float64 chunks of
8 MiB, the finiteness mask, a quarter tensor) and allocator slack. Measured on this project's
machine (40 tensors, l2, param_norm, param_count): 60 MiB streamed (bound 96 MiB) against
1,280 MiB for loading the 640 MiB model (the state dict and the model).
The same check on a whole-model load must fail, or the test would prove nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

N_TENSORS, ROWS, COLS = 24, 1024, 4096  # 24 tensors of 16 MiB: a 384 MiB checkpoint
TENSOR_MIB = ROWS * COLS * 4 / 2**20
MARGIN_MIB = 64
MEASURES = ["l2", "param_norm"]

SCRIPT = r"""
import functools, json, resource, sys
import torch, xarray, pandas, tqdm.auto
from torch import nn
import complexity_zoo as cz

class Stack(nn.Module):
    def __init__(self, n, rows, cols):
        super().__init__()
        self.layers = nn.ParameterList([nn.Parameter(torch.empty(rows, cols)) for _ in range(n)])

def status():
    with open("/proc/self/status") as f:
        return {k: int(v.split()[0]) for k, v in (line.split(":", 1) for line in f) if v.strip().endswith("kB")}

mode, measures, n, rows, cols, *paths = sys.argv[1:]
measures = measures.split(",")
traj = cz.Trajectory.from_files(paths, model=functools.partial(Stack, int(n), int(rows), int(cols)))
tiny = cz.Trajectory.from_state_dicts({0: {"layers.0": torch.ones(2, 2)}}, model=functools.partial(Stack, 1, 2, 2))
cz.compare(tiny, measures, progress=False, strict=True)  # every lazy import, before the baseline
traj.parameter_plan()
base = status()
try:  # reset the peak (VmHWM) to the current RSS, so that it measures the run only (Linux >= 4.0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
except OSError:
    pass
if mode == "stream":
    out = cz.compare(traj, measures, progress=False, strict=True)
    values = [float(v) for v in out.dataset[measures[0]].values.ravel()]
else:
    values = [cz.get_measure(measures[0])(traj.model_at(s)).value for s in traj.steps]
end = status()
maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"base": base, "end": end, "maxrss_kib": maxrss, "values": values}))
"""


def write_safetensors(path, seed: int) -> None:
    """A safetensors file written one tensor at a time (the test's own writer, so the parent's
    memory stays small too), read back by the library's reader."""
    nbytes = ROWS * COLS * 4
    header = {f"layers.{i}": {"dtype": "F32", "shape": [ROWS, COLS], "data_offsets": [i * nbytes, (i + 1) * nbytes]}
              for i in range(N_TENSORS)}
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    g = torch.Generator().manual_seed(seed)
    with open(path, "wb") as f:
        f.write(len(blob).to_bytes(8, "little") + blob)
        for _ in range(N_TENSORS):
            f.write(torch.randn(ROWS, COLS, generator=g).numpy().tobytes())


def growth_mib(mode: str, paths) -> tuple[float, list[float]]:
    cmd = [sys.executable, "-c", SCRIPT, mode, ",".join(MEASURES), str(N_TENSORS), str(ROWS), str(COLS),
           *map(str, paths)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    base, end = out["base"], out["end"]
    raw = (out["maxrss_kib"] - base["VmRSS"]) / 1024
    # Peak anonymous memory: the peak RSS less the file pages (shared libraries) resident at the
    # end. Without this, a neighbour's memory pressure that evicts torch's library pages before
    # the baseline and lets them fault back in during the run reads as growth (seen: 435 MiB).
    anon = (end["VmHWM"] - end["RssFile"] - end.get("RssShmem", 0) - base["RssAnon"]) / 1024
    print(f"{mode}: maxrss - RSS after imports = {raw:.1f} MiB; peak anonymous growth = {anon:.1f} MiB")
    return anon, out["values"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads VmRSS from /proc")
def test_a_streamed_comparison_stays_within_twice_the_largest_tensor(tmp_path):
    paths = [tmp_path / f"step_{s}.safetensors" for s in (1, 2)]
    for seed, path in enumerate(paths):
        write_safetensors(path, seed)
    bound = 2 * TENSOR_MIB + MARGIN_MIB
    streamed, values = growth_mib("stream", paths)
    print(f"streamed: peak RSS growth {streamed:.1f} MiB (bound {bound:.0f}, tensor {TENSOR_MIB:.0f} MiB)")
    assert streamed < bound
    loaded, whole = growth_mib("model", paths[:1])
    print(f"whole-model load: peak RSS growth {loaded:.1f} MiB")
    assert loaded > bound  # the bound tells the two apart
    assert whole[0] == pytest.approx(values[0], rel=1e-12)
