"""``torchrun --nproc_per_node=2 -m maskfx train``: two CPU processes (gloo) end with identical
weights, masks and frozen structure, and only rank 0 writes."""
import subprocess
import sys
from pathlib import Path

import torch

from maskfx.train import ddp, load_checkpoint

TESTS = Path(__file__).parent


def test_two_processes_agree_on_weights_masks_and_frozen_structure(tmp_path):
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29531",
               "-m", "maskfx", "train", "tiny_models:resnet", "--blockout", "--maskconnect", "--fan-in", "1",
               "--image-size", "16", "--limit", "64", "--epochs", "1", "--finetune-epochs", "1", "--batch-size", "16",
               "--device", "cpu", "--out", str(tmp_path)]
    env = {"PYTHONPATH": f"{TESTS.parent}:{TESTS}", "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, cwd=TESTS.parent, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    # check_replicas all-gathers every rank's state digest and fails the run if they differ
    assert "2 process(es) agree on the final state" in done.stdout
    assert done.stdout.count("epoch 2 (phase 2)") == 1  # rank 0 logs, rank 1 does not
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt", "history.json"]
    net = load_checkpoint(tmp_path / "checkpoint.pt").network()
    digest = done.stdout.split("sha256 ")[1][:16]
    assert ddp.state_digest(net).startswith(digest)  # the saved state is the agreed one
    assert all(bool(b) for name, b in net.state_dict().items() if name.endswith(".frozen"))


def test_structure_draws_are_shared_but_the_generator_stream_is_not(tmp_path):
    """The hooks make a structure layer's draws depend on (seed, site, call) only, and hand the
    caller's generator back untouched by them."""
    from maskfx.layers.kofn import KOfNMasks

    layer = KOfNMasks((4, 6), fan_in=2).train()
    layer.forward = lambda: layer.sample()
    draws = []
    for rank_noise in (0, 1):
        torch.manual_seed(100 + rank_noise)  # ranks seed their own streams differently
        hooks = ddp.share_structure_draws(layer, seed=7)
        draws.append([layer() for _ in range(3)])
        after = torch.rand(1)
        for hook in hooks:
            hook.remove()
        torch.manual_seed(100 + rank_noise)
        assert torch.equal(after, torch.rand(1))  # the rank's own stream was restored
    assert all(torch.equal(a, b) for a, b in zip(*draws)) and not torch.equal(draws[0][0], draws[0][1])
