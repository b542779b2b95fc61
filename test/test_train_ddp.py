"""Training under `torchrun` with 2 CPU processes on gloo: sharded data, synchronised weights, rank-0-only writes."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

WORKER = textwrap.dedent("""
    import json, os, sys
    import torch
    torch.set_num_threads(1)
    from admn_core.cli import configure_logging
    from admn_core.models.task_model import ADMNModel
    from admn_core.train.batching import CorruptionTargets
    from admn_core.train.config import ControllerTrainConfig, Stage1Config
    from admn_core.train.controllers import train_controller
    from admn_core.train.stage1 import train_stage1
    from admn_core.train.toy import SquareDataset, toy_config

    configure_logging()  # the progress lines, as under `admn train`
    out = sys.argv[1]
    rank = int(os.environ["RANK"])
    config = toy_config()
    torch.manual_seed(rank)  # different inits per rank: DDP must broadcast rank 0's weights
    model = ADMNModel(config)
    history = train_stage1(model, SquareDataset(config, 24), Stage1Config(epochs=2, batch_size=4, lr=1e-3),
                           run_dir=os.path.join(out, "stage1"))
    targets = CorruptionTargets(weights=())
    controller, chistory = train_controller(model, SquareDataset(config, 24, noisy="depth"), 5,
                                            ControllerTrainConfig(epochs=2, batch_size=4), corruption=targets,
                                            run_dir=os.path.join(out, "controller"))
    import torch.distributed as dist
    result = {"world": dist.get_world_size(),
              "model": [float(p.double().sum()) for p in model.parameters()],
              "controller": [float(p.double().sum()) for p in controller.parameters()],
              "loss": [row["train_loss"] for row in history], "closs": [row["loss"] for row in chistory]}
    with open(os.path.join(out, f"rank{rank}.json"), "w") as handle:
        json.dump(result, handle)
""")


@pytest.mark.slow
def test_torchrun_two_cpu_processes(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
               str(tmp_path)]
    completed = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["world"] == ranks[1]["world"] == 2
    assert ranks[0]["model"] == pytest.approx(ranks[1]["model"], rel=1e-6)  # gradients all-reduced every step
    assert ranks[0]["controller"] == pytest.approx(ranks[1]["controller"], rel=1e-6)
    assert ranks[0]["loss"] == ranks[1]["loss"]  # epoch metrics are global means over both shards
    for stage in ("stage1", "controller"):
        rows = (tmp_path / stage / "metrics.csv").read_text().strip().splitlines()
        assert len(rows) == 3, rows  # header + 2 epochs: only rank 0 writes
        assert (tmp_path / stage / "checkpoint.safetensors").exists()
    assert completed.stderr.count("[stage1] epoch") == 2  # one progress line per epoch, from rank 0
