"""Learned precision: the rule is the gradient of the regularized free energy, its
fixed point is the analytic one, the Gamma prior keeps a precision the latents can
explain away bounded (without it, it runs away), per-unit precisions keep every
rule exact; the uncertainty outputs."""

import lightning as L
import pytest
import torch

from pcn_lightning import NetworkSpec, PCNModule, build_network, seeding
from pcn_lightning.rules import precision_free_energy, precision_gradient


def rel_err(a, b):
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


@pytest.mark.parametrize("shape", ["scalar", "unit"])
@pytest.mark.parametrize("nu", [0.0, 0.3])
def test_precision_rule_is_the_gradient_of_the_regularized_free_energy(shape, nu):
    torch.manual_seed(0)
    net = build_network(NetworkSpec(direction="generative", dims=[7, 5, 4], activations="tanh",
                                    precisions=[0.5, 2.0, 0.1]), [7], 3).double()
    xs, _, _ = net.initial_state(torch.randn(6, 7, dtype=torch.float64),
                              torch.nn.functional.one_hot(torch.randint(0, 3, (6,)), 3).double(), "random", 1.0)
    for t in net.terms:
        t.learn_precision(() if shape == "scalar" else net.nodes[t.target].shape)
        with torch.no_grad():
            t.log_precision.add_(0.3 * torch.randn_like(t.log_precision))
        t.refresh_precision()
    errors = net.errors(xs)
    lps = [t.log_precision.detach().clone().requires_grad_(True) for t in net.terms]
    F = precision_free_energy(net, errors, lps, nu, [t.prior_mean for t in net.terms])
    auto = torch.autograd.grad(F, lps)
    for t, e, a in zip(net.terms, errors, auto):
        mine = precision_gradient(t.log_precision.detach(), e.eps, nu, t.prior_mean)
        assert mine.shape == a.shape and rel_err(mine, a) < 1e-12
    # the fixed point: p* = (1 + nu) / (S/n + nu / p0)
    for t, e in zip(net.terms, errors):
        S = e.eps.square().sum() if shape == "scalar" else e.eps.square().sum(0)
        n = e.eps.numel() if shape == "scalar" else e.eps.shape[0]
        p_star = (1 + nu) / (S / n + nu / t.prior_mean)
        assert precision_gradient(p_star.log(), e.eps, nu, t.prior_mean).abs().max() < 1e-9


@pytest.mark.parametrize("activation", ["tanh", "relu", "linear"])
def test_per_unit_precision_rules_equal_autograd(activation):
    torch.manual_seed(1)
    net = build_network(NetworkSpec(direction="discriminative", dims=[7, 5, 4], activations=activation), [7], 3).double()
    for t in net.terms:
        t.learn_precision(net.nodes[t.target].shape)
        with torch.no_grad():
            t.log_precision.copy_(torch.randn_like(t.log_precision) * 0.5)
        t.refresh_precision()
    x = torch.randn(6, 7, dtype=torch.float64)
    y = torch.nn.functional.one_hot(torch.randint(0, 3, (6,)), 3).double()
    xs, free, _ = net.initial_state(x, y, "random", 1.0)
    errors = net.errors(xs)
    gx = net.latent_gradients(errors, free)
    leaves = [v.detach().clone().requires_grad_(f) for v, f in zip(xs, free)]
    E = net.direct_energy(leaves)
    auto = torch.autograd.grad(E, [v for v, f in zip(leaves, free) if f])
    for g, a in zip([g for g in gx if g is not None], auto):
        assert rel_err(g, a) < 1e-10
    pairs = net.weight_gradients(errors)
    for (p, g), a in zip(pairs, torch.autograd.grad(net.direct_energy(xs), [p for p, _ in pairs])):
        assert rel_err(g, a) < 1e-10
    assert torch.allclose(net.energies(errors).sum(), E.detach(), rtol=1e-12)


def train_precisions(nu, epochs=150):
    """Only the precisions learn (weight rates tiny), on one fixed batch."""
    L.seed_everything(0)
    m = PCNModule.from_flat(dims=[20, 16, 4], output_dim=3, activations="tanh", T_infer=5, eta_learn=1e-9,
                            optimizer="sgd", learn_precision=True, precision_prior=nu, eta_precision=0.05)
    x, y = torch.randn(64, 20), torch.randint(0, 3, (64,))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=64)
    history = []
    for e in (epochs // 2, epochs):
        trainer = L.Trainer(max_epochs=e, accelerator="cpu", logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False)
        trainer.fit(m, loader)
        history.append([t.pi for t in m.net.terms])
    _, res = m.settle_batch(x, y, generator=seeding.training_generator(0, 0, 0))
    return m, history, res


def test_the_prior_bounds_the_precision_that_ran_away():
    """The hidden layer's precision, which runs away without a prior (the latents
    shrink its error as it grows), settles with nu = 0.5 at its analytic fixed point,
    under the prior's bound p0 (1 + nu) / nu = 3."""
    _, free_run, _ = train_precisions(0.0)
    assert free_run[-1][1] > free_run[0][1] > 2.0  # still climbing: the documented failure
    nu = 0.5
    m, history, res = train_precisions(nu)
    hidden = m.net.terms[1]
    assert history[-1][1] < hidden.prior_mean * (1 + nu) / nu
    assert abs(history[-1][1] / history[0][1] - 1) < 0.02  # converged, not climbing
    e = res.errors[1].eps
    p_star = (1 + nu) / (e.square().mean().item() + nu / hidden.prior_mean)
    assert abs(history[-1][1] / p_star - 1) < 0.05


def test_predict_uncertainty_outputs():
    torch.manual_seed(0)
    m = PCNModule.from_flat(dims=[784, 32, 10], output_dim=10, T_infer=5, latent_init="zeros")
    x = torch.rand(8, 1, 28, 28)
    out = m.predict_uncertainty(x)
    assert out["logits"].shape == (8, 10) and out["probs"].shape == (8, 10)
    assert torch.allclose(out["probs"].sum(1), torch.ones(8))
    assert out["term_energies"].shape == (8, 3) and torch.allclose(out["energy"], out["term_energies"].sum(1))
    assert torch.equal(out["logits"], m.predict_logits(x))
    # the committed energy: a settle with the network's own top class clamped as the label
    _, res = m.settle_batch(x, out["logits"].argmax(1), m.inference, per_sample_seeds=True)
    expected = sum(t.sample_energy(e) for t, e in zip(m.net.terms, res.errors) if e is not None)
    assert torch.allclose(out["committed_energy"], expected) and (out["committed_energy"] > 0).all()
    # discriminative: with the label free every node settles at its prediction, energy 0
    # by construction; the committed energy is what still separates inputs
    d = PCNModule.from_flat(direction="discriminative", dims=[784, 32, 10], output_dim=10, T_infer=5,
                            latent_init="feedforward")
    dout = d.predict_uncertainty(x)
    assert torch.equal(dout["energy"], torch.zeros(8)) and (dout["committed_energy"] > 0).all()
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    preds = trainer.predict(m, torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x.reshape(8, -1)), batch_size=4))
    assert len(preds) == 2 and set(preds[0]) == {"logits", "probs", "energy", "term_energies", "committed_energy"}


def test_predictive_precision_rule_is_the_gradient_of_the_class_likelihood():
    from pcn_lightning.rules import predictive_precision_gradient

    torch.manual_seed(0)
    pred = torch.randn(7, 4, dtype=torch.float64)
    y = torch.nn.functional.one_hot(torch.randint(0, 4, (7,)), 4).double()
    lp = torch.tensor(0.4, dtype=torch.float64, requires_grad=True)
    nll = -(y * torch.log_softmax(lp.exp() * pred, 1)).sum()
    (auto,) = torch.autograd.grad(nll, [lp])
    assert rel_err(predictive_precision_gradient(lp.detach(), pred, y), auto) < 1e-12
