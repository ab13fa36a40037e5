"""Two nodes on one machine, started the way a cluster starts them: two train.py
processes with Lightning's num_nodes 2, one device each, MASTER_ADDR, MASTER_PORT and
NODE_RANK set (gloo on the CPU). Their updates equal one process on the global batch,
and a checkpoint resumes across world sizes (2 -> 1 and 1 -> 2) to the result of a run
that was never interrupted."""

import os
import socket
import subprocess
import sys

import pytest
import torch

from tests.conftest import REPO
from tests.integration.test_ddp import BASE, SETUPS, rel

pytestmark = pytest.mark.xdist_group("ddp")  # one worker runs every DDP launch, one after another


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def args_for(data_dir, dump, per_device, epochs, extra=()):
    return [*BASE, *SETUPS["adam_conv"], "--data.data_dir", str(data_dir), "--data.batch_size", str(per_device),
            "--trainer.accelerator", "cpu", "--trainer.max_epochs", str(epochs),
            "--trainer.callbacks+=callbacks.replica_check.ReplicaCheck", "--trainer.callbacks.dump_dir", str(dump),
            *extra]


def env_for(**extra):
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    env.update(extra)
    return env


def two_nodes(cwd, args) -> None:
    """Node 0 and node 1, one process each, as `srun` or a job script starts them."""
    port = str(free_port())
    procs = [subprocess.Popen([sys.executable, str(REPO / "train.py"), *args, "--trainer.num_nodes", "2",
                               "--trainer.devices", "1", "--trainer.strategy", "ddp"], cwd=cwd,
                              env=env_for(MASTER_ADDR="127.0.0.1", MASTER_PORT=port, NODE_RANK=str(node)),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for node in (0, 1)]
    outs = [p.communicate(timeout=300) for p in procs]
    for node, (p, (_, err)) in enumerate(zip(procs, outs)):
        assert p.returncode == 0, f"node {node}: {err[-3000:]}"


def one_process(cwd, args) -> None:
    r = subprocess.run([sys.executable, str(REPO / "train.py"), *args, "--trainer.devices", "1"], cwd=cwd,
                       env=env_for(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]


def params(dump, ranks=1):
    return [torch.load(dump / f"params_rank{r}.pt") for r in range(ranks)]


def last_checkpoint(root):
    return next(root.rglob("last.ckpt"))


def assert_close(a, b, what):
    assert a.keys() == b.keys()
    for k in a:
        assert rel(a[k], b[k]) < 1e-5, f"{what}, {k}: {rel(a[k], b[k]):.2e}"


def test_two_nodes_equal_one_process_and_resume_across_world_sizes(tmp_path, fmnist_session_dir):
    data = fmnist_session_dir
    # uninterrupted: one process (global batch 32), and two nodes (16 each), two epochs
    (tmp_path / "one").mkdir()
    one_process(tmp_path / "one", args_for(data, tmp_path / "one_dump", 32, 2))
    (tmp_path / "two").mkdir()
    two_nodes(tmp_path / "two", args_for(data, tmp_path / "two_dump", 16, 2))
    single = params(tmp_path / "one_dump")[0]
    node0, node1 = params(tmp_path / "two_dump", 2)
    for k in single:
        assert torch.equal(node0[k], node1[k]), f"{k} differs between the nodes"
    assert_close(node0, single, "two nodes against one process")

    # 2 -> 1: the first epoch on two nodes, the second resumed on one process
    (tmp_path / "a").mkdir()
    two_nodes(tmp_path / "a", args_for(data, tmp_path / "a_dump", 16, 1))
    one_process(tmp_path / "a", args_for(data, tmp_path / "a2_dump", 32, 2,
                                         ["--ckpt_path", str(last_checkpoint(tmp_path / "a"))]))
    assert_close(params(tmp_path / "a2_dump")[0], single, "two nodes resumed on one process")

    # 1 -> 2: the first epoch on one process, the second resumed on two nodes
    (tmp_path / "b").mkdir()
    one_process(tmp_path / "b", args_for(data, tmp_path / "b_dump", 32, 1))
    two_nodes(tmp_path / "b", args_for(data, tmp_path / "b2_dump", 16, 2,
                                       ["--ckpt_path", str(last_checkpoint(tmp_path / "b"))]))
    assert_close(params(tmp_path / "b2_dump", 2)[0], node0, "one process resumed on two nodes")
