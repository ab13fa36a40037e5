"""The LightningModule: the seed's rule through the optimizer, a real Trainer run,
label-free evaluation."""

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from pcn_lightning import BackpropTwin, PCNModule
from pcn_lightning.step import set_gradients


def random_loader(n=64, d=12, classes=4, batch=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=batch, drop_last=True)


def test_sgd_step_is_the_seed_rule():
    """One SGD step with lr eta gives W += eta * h x^T / B (and R likewise)."""
    torch.manual_seed(0)
    eta = 0.05
    m = PCNModule.from_flat(dims=[12, 8, 6, 4], output_dim=4, activations="tanh", T_infer=5,
                  eta_infer=0.1, eta_learn=eta, optimizer="sgd", latent_init="random")
    opt = m.configure_optimizers()
    x = torch.randn(10, 12)
    y = torch.randint(0, 4, (10,))
    xs, res = m.settle_batch(x, y, generator=torch.Generator().manual_seed(1))
    pairs = m.net.weight_gradients(res.errors)
    before = [p.detach().clone() for p, _ in pairs]
    set_gradients(pairs, 10)
    opt.step()
    B = 10
    for t, e, W0 in zip(m.net.terms, res.errors, before):  # W(0..2), then the readout R
        expected = W0 + eta * e.h.T @ xs[t.source] / B
        assert torch.allclose(t.map.weight, expected, atol=1e-7, rtol=1e-6)
    readout = m.net.terms[-1]
    assert readout.name == "readout" and readout.target == m.net.label
    R_expected = before[-1] + eta * res.errors[-1].eps.T @ xs[readout.source] / B
    assert torch.allclose(readout.map.weight, R_expected, atol=1e-7, rtol=1e-6)


def test_a_training_step_hands_the_optimizer_its_local_gradients():
    """`local_gradients(x, y)` is what a step learns from: called before the step (same
    seeded settle), it gives every learned parameter's summed gradient; the step sets
    p.grad to it over the batch size."""
    torch.manual_seed(0)
    m = PCNModule.from_flat(dims=[12, 8, 6], output_dim=4, activations="tanh", T_infer=4, eta_infer=0.1,
                            latent_init="random", optimizer="sgd", readout_learning="label_free")
    x, y = torch.randn(10, 12), torch.randint(0, 4, (10,))
    pairs = m.local_gradients(x, y)
    assert {id(p) for p, _ in pairs} == {id(p) for p in m.parameters() if p.requires_grad}
    opt = m.configure_optimizers()
    m.optimizers, m.log = (lambda: opt), (lambda *a, **k: None)
    m.training_step((x, y), 0)
    for p, g in pairs:
        assert torch.allclose(p.grad, g / 10, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("direction,init", [("generative", "random"), ("discriminative", "feedforward")])
def test_trainer_run_learns_without_autograd(direction, init):
    L.seed_everything(0)
    m = PCNModule.from_flat(dims=[12, 16, 8], output_dim=4, activations="tanh", direction=direction,
                  latent_init=init, T_infer=20, eta_infer=0.1, eta_learn=0.01, optimizer="adam")
    before = [p.detach().clone() for p in m.parameters()]
    loader = random_loader()
    energies = []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            energies.append(pl_module.last_term_energies.sum().item())

    trainer = L.Trainer(max_epochs=8, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[Record()])
    trainer.fit(m, loader)
    assert trainer.global_step == 8 * 4  # one optimizer step per batch
    for p0, p1 in zip(before, m.parameters()):
        assert not torch.equal(p0, p1)
        assert p1.grad_fn is None
    assert sum(energies[-4:]) < sum(energies[:4])


def test_t_learn_micro_steps_advance_global_step():
    m = PCNModule.from_flat(dims=[12, 8, 4], output_dim=4, T_infer=3, t_learn=3)
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(m, random_loader())
    assert trainer.global_step == 4 * 3


def test_per_layer_learning_rates():
    m = PCNModule.from_flat(dims=[12, 8, 6, 4], output_dim=4, eta_learn=[0.1, 0.2, 0.3, 0.4], optimizer="sgd")
    opt = m.configure_optimizers()
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.2, 0.3, 0.4]
    assert opt.param_groups[-1]["params"][0] is m.net.terms[-1].map.weight
    assert m.net.terms[-1].name == "readout"


@pytest.mark.parametrize("direction", ["generative", "discriminative"])
def test_label_permutation_leaves_predictions_unchanged(direction):
    torch.manual_seed(0)
    m = PCNModule.from_flat(dims=[12, 8, 4], output_dim=4, direction=direction,
                  latent_init="random" if direction == "generative" else "feedforward", T_infer=10)
    x = torch.randn(16, 12)
    y = torch.randint(0, 4, (16,))
    out1 = m.validation_step((x, y), 0)
    out2 = m.validation_step((x, y[torch.randperm(16)]), 0)
    out3 = m.test_step((x, (y + 1) % 4), 0)
    assert torch.equal(out1, out2) and torch.equal(out1, out3)


@pytest.mark.parametrize("direction", ["generative", "discriminative"])
def test_twin_has_the_pcn_shapes(direction):
    kw = dict(dims=[3072, 1000, 500, 10], output_dim=10, direction=direction)
    pcn, twin = PCNModule.from_flat(**kw), BackpropTwin.from_flat(**kw)
    assert [p.shape for p in pcn.parameters()] == [p.shape for p in twin.parameters()]
    assert sum(p.numel() for p in twin.parameters()) == 3_577_100
    assert twin(torch.randn(2, 3072)).shape == (2, 10)


@pytest.mark.parametrize("direction,init", [("generative", "random"), ("discriminative", "feedforward")])
def test_trainer_test_accuracy_equals_direct_computation(direction, init):
    L.seed_everything(0)
    m = PCNModule.from_flat(dims=[12, 16, 8], output_dim=4, activations="tanh", direction=direction,
                  latent_init=init, T_infer=20, eta_infer=0.1, eta_learn=0.01, optimizer="adam")
    trainer = L.Trainer(max_epochs=3, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(m, random_loader())
    test_loader = random_loader(n=48, seed=1)
    metrics = trainer.test(m, test_loader, verbose=False)[0]
    correct = total = 0
    top3 = 0
    for i, (x, y) in enumerate(test_loader):
        logits, _ = m.eval_outputs(x)
        correct += (logits.argmax(1) == y).sum().item()
        top3 += (logits.topk(3, 1).indices == y[:, None]).any(1).sum().item()
        total += len(y)
    assert metrics["test/acc_top1"] == pytest.approx(correct / total, abs=1e-6)
    assert metrics["test/acc_top3"] == pytest.approx(top3 / total, abs=1e-6)


def test_adam_eps_and_betas_reach_the_optimizer_and_are_checked():
    """`adam_eps` and `adam_betas` are Adam's (a PCN's settled errors can sit below
    torch's 1e-8, and their scale drifts faster than beta2 0.999 follows)."""
    from pcn_lightning.errors import ConfigError
    from pcn_lightning.settings import Learning

    m = PCNModule.from_flat(dims=[12, 8, 4], output_dim=4, optimizer="adam", adam_eps=1e-15, adam_betas=[0.9, 0.99])
    opt = m.configure_optimizers()
    assert all(g["eps"] == 1e-15 and g["betas"] == (0.9, 0.99) for g in opt.param_groups)
    default = PCNModule.from_flat(dims=[12, 8, 4], output_dim=4, optimizer="adam").configure_optimizers().param_groups[0]
    assert default["eps"] == 1e-8 and default["betas"] == (0.9, 0.999)
    with pytest.raises(ConfigError, match="adam_eps must be a positive number"):
        Learning(adam_eps=0)
    for bad in ([0.9], [0.9, 1.0], "0.9"):
        with pytest.raises(ConfigError, match="adam_betas must be two numbers"):
            Learning(adam_betas=bad)


def test_the_guard_reads_the_energies_learning_read():
    """One sweep at eta 1 with grown weights ends far above where it started. With errors
    on arrival that end state is not what learning reads: the guard checks (and the logs
    show) the energies of the errors on arrival, and does not ask inference to lower
    the energy; with settled errors the guard stops the run."""
    from pcn_lightning.errors import DivergenceError

    sweep = dict(dims=[12, 10, 10], output_dim=4, activations="tanh", T_infer=1, eta_infer=1.0,
                 schedule="sequential", latent_init="feedforward", direction="discriminative", optimizer="sgd")
    g = torch.Generator().manual_seed(0)  # not the global RNG: the test's numbers must not depend on the order
    x, y = torch.randn(8, 12, generator=g) * 0.1, torch.randint(0, 4, (8,), generator=g)
    for weight_errors in ("on_arrival", "settled"):
        torch.manual_seed(0)
        m = PCNModule.from_flat(**sweep, weight_errors=weight_errors)
        with torch.no_grad():
            for t in m.net.terms:
                t.map.weight.mul_(3.0)
        opt = m.configure_optimizers()
        m.optimizers, m.log = (lambda: opt), (lambda *a, **k: None)
        if weight_errors == "on_arrival":
            on_arrival = m.net.energies(m.settle_for_learning(x, y)[1].errors)
            end = m.net.energies(m.settle_batch(x, y)[1].errors).sum()  # the same sweep, to its end state
            assert on_arrival.sum() < end / 3  # 4.4-7.3x over 20 draws of the batch
            m.training_step((x, y), 0)
            assert torch.allclose(m.last_term_energies, on_arrival / 8)
        else:
            with pytest.raises(DivergenceError, match="inference diverged"):
                m.training_step((x, y), 0)


@pytest.mark.parametrize("label_energy", ["gaussian", "categorical"])
def test_errors_on_arrival_learn_what_the_twin_learns(label_energy):
    """Through the modules themselves: a PCN learning from errors on arrival hands the
    optimizer the gradient its backprop twin's loss has (squared error for a Gaussian
    label, cross-entropy of the logits for a categorical one: the twin's default)."""
    from pcn_lightning import NetworkSpec
    from pcn_lightning.settings import Inference, Learning

    torch.manual_seed(0)
    network = NetworkSpec(direction="discriminative", dims=[12, 10, 8], activations="tanh", label_energy=label_energy)
    pc = PCNModule(network, Inference(T_infer=1, eta_infer=1.0, schedule="sequential", latent_init="feedforward"),
                   learning=Learning(weight_errors="on_arrival"), input_shape=[12], output_dim=4).double()
    twin = BackpropTwin(network, input_shape=[12], output_dim=4).double()
    assert twin.loss_name == ("ce" if label_energy == "categorical" else "mse")
    twin.load_state_dict(pc.state_dict(), strict=False)
    twin.log = lambda *a, **k: None
    x, y = torch.randn(16, 12, dtype=torch.float64), torch.randint(0, 4, (16,))
    pairs = pc.local_gradients(x, y)
    bp = torch.autograd.grad(twin.training_step((x, y), 0), list(twin.net.parameters()))
    assert len(pairs) == len(bp)
    for (_, g), b in zip(pairs, bp):
        assert torch.allclose(g / 16, b, rtol=1e-9, atol=1e-12)
    with pytest.raises(Exception, match="cross-entropy"):
        BackpropTwin(NetworkSpec(direction="discriminative", dims=[12, 8], label_energy="categorical"), loss="mse")
