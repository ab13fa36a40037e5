"""The generative model: generation, classification by energy, no label in evaluation."""

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from callbacks.class_samples import ClassSamples, to_images
from pcn_lightning import PCNModule, PCNDataModule
from pcn_lightning import generation, seeding
from pcn_lightning.rules import precision_free_energy


def model(**kw):
    base = dict(dims=[784, 16, 10], output_dim=10, activations=["sigmoid", "tanh"], T_infer=10, eta_infer=0.1)
    return PCNModule.from_flat(**{**base, **kw})


def test_top_down_sweep_is_the_zero_error_state():
    torch.manual_seed(0)
    m = model()
    net = m.net
    xs = [None] * len(net.nodes)
    xs[net.terms[-1].source] = torch.randn(5, 10)
    xs[net.data] = generation.top_down(net, xs[net.terms[-1].source])
    net.complete(xs, [True] * len(net.terms))  # the latents between: the sweep's values
    xs = [None] * len(net.nodes)
    top = torch.randn(5, 10)
    xs[2] = top
    net.sweep(xs, net.terms, [1, 0])  # x(1) = f(W1 x(2)), x(0) = f(W0 x(1))
    assert torch.equal(xs[0], generation.top_down(net, top))
    errors = net.errors(xs, [True, True, False])  # the label's term aside
    assert net.energies(errors).sum().item() == 0.0


def test_generate_shape_range_determinism():
    torch.manual_seed(0)
    m = model()
    classes = torch.arange(10).repeat(3)
    a = m.generate(classes, noise_std=0.5, generator=torch.Generator().manual_seed(1))
    b = m.generate(classes, noise_std=0.5, generator=torch.Generator().manual_seed(1))
    c = m.generate(classes, noise_std=0.5, generator=torch.Generator().manual_seed(2))
    assert a.shape == (30, 784)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= 0 and a.max() <= 1  # sigmoid layer 0 predicts pixels in (0, 1)
    # the clamped top reads out as the requested class
    R = m.net.terms[-1].map.weight
    top = torch.nn.functional.one_hot(classes, 10).float() @ torch.linalg.pinv(R).T
    assert ((top @ R.T).argmax(1) == classes).all()
    imgs = to_images(a, None)
    assert imgs.shape == (30, 1, 28, 28)


def test_energy_classification_never_sees_the_label():
    torch.manual_seed(0)
    m = model(eval_mode="energy")
    x = torch.rand(12, 784)
    y = torch.randint(0, 10, (12,))
    out1 = m.test_step((x, y), 0)
    out2 = m.test_step((x, y[torch.randperm(12)]), 0)
    out3 = m.validation_step((x, (y + 3) % 10), 0)
    assert out1.shape == (12, 10)
    assert torch.equal(out1, out2) and torch.equal(out1, out3)
    # the scores are minus the settled energies of each clamped class
    scores = m.classify_by_energy(x)
    assert torch.equal(scores, out1)


def test_energy_classification_picks_the_lowest_energy_class():
    """A model that explains class 3 perfectly: the image is exactly its generation."""
    torch.manual_seed(0)
    m = model(eval_mode="energy", activations="linear", dims=[30, 12, 10], T_infer=3000, eta_infer=0.1)
    x = m.generate(torch.tensor([3, 7]))
    scores = m.classify_by_energy(x)
    assert scores.argmax(1).tolist() == [3, 7]


def test_class_samples_callback_writes_a_grid(tmp_path, fmnist_dir):
    dm = PCNDataModule("fashion_mnist", data_dir=str(fmnist_dir), batch_size=32, val_size=0)
    logger = TensorBoardLogger(str(tmp_path), name="gen")
    trainer = L.Trainer(max_epochs=1, limit_train_batches=2, accelerator="cpu", logger=logger,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[ClassSamples(per_class=4)])
    trainer.fit(model(), datamodule=dm)
    ea = EventAccumulator(logger.log_dir, size_guidance={"images": 0})
    ea.Reload()
    assert "generation/samples" in ea.Tags()["images"]
    img = ea.Images("generation/samples")[0]
    assert img.width > 4 * 28 and img.height > 10 * 28


def test_amortization_rule_is_its_energy_gradient():
    torch.manual_seed(0)
    m = PCNModule.from_flat(dims=[12, 8, 5], output_dim=3, activations="tanh", amortized=True, latent_init="amortized").double()
    xs = [torch.randn(6, d, dtype=torch.float64) for d in (12, 8, 5)]
    mine = [g for t in m.net.amortizer for g in t.weight_grads(t.errors(xs[t.target], xs[t.source]))]
    E = sum(t.direct_energy(xs[t.target], xs[t.source]) for t in m.net.amortizer)
    auto = torch.autograd.grad(E, [t.map.weight for t in m.net.amortizer])
    assert len(mine) == len(auto) == 2
    for g, a in zip(mine, auto):
        assert ((g - a).norm() / a.norm()).item() < 1e-10


def test_amortized_model_trains_and_never_sees_the_label():
    L.seed_everything(0)
    m = PCNModule.from_flat(dims=[20, 16, 4], output_dim=4, activations="tanh", amortized=True, latent_init="amortized",
                  T_infer=10, eta_infer=0.1, eta_learn=0.01, eta_amort=0.01, optimizer="adam")
    x = torch.rand(64, 20)
    y = torch.randint(0, 4, (64,))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    before = [t.map.weight.detach().clone() for t in m.net.amortizer]
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(m, loader)
    assert all(not torch.equal(a, t.map.weight) for a, t in zip(before, m.net.amortizer))
    results = trainer.test(m, torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16))
    shuffled = trainer.test(m, torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y[torch.randperm(64)]), batch_size=16))
    assert results[0]["test/energy"] == shuffled[0]["test/energy"]  # inference never saw the labels
    logits, _ = m.eval_outputs(x[:16])
    assert torch.equal(logits, m.eval_outputs(x[:16])[0])


def test_generate_from_class_prototypes():
    torch.manual_seed(0)
    m = model()
    x = torch.rand(40, 784)
    y = torch.arange(10).repeat(4)
    protos = m.class_prototypes(x, y)
    assert protos.shape == (10, 10)
    a = m.generate(torch.tensor([2, 2, 5]), prototypes=protos)
    t1, t0 = m.net.terms[1], m.net.terms[0]
    expected = t0.act.f(t0.map.predict(t1.act.f(t1.map.predict(protos[[2, 2, 5]])[0]))[0])
    assert torch.allclose(a, expected)
    # a class missing from the labelled batch falls back to the readout's least-norm latent
    p2 = m.class_prototypes(x[y != 7], y[y != 7])
    assert torch.allclose(p2[7], (torch.eye(10) @ torch.linalg.pinv(m.net.terms[-1].map.weight).T)[7])


def test_readout_rule_is_its_energy_gradient():
    torch.manual_seed(0)
    x_top = torch.randn(7, 5, dtype=torch.float64)
    R = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    y = torch.nn.functional.one_hot(torch.randint(0, 3, (7,)), 3).double()
    E = 0.5 * 0.3 * (y - x_top @ R.T).pow(2).sum()
    (auto,) = torch.autograd.grad(E, [R])
    from pcn_lightning.activations import get_activation
    from pcn_lightning.primitives import Dense
    from pcn_lightning.terms import Term

    dense = Dense((5,), 3).double()
    with torch.no_grad():
        dense.weight.copy_(R)
    readout = Term("readout", 1, 0, dense, get_activation("linear"), precision=0.3)
    (mine,) = readout.weight_grads(readout.errors(y, x_top))
    assert ((mine - auto).norm() / auto.norm()).item() < 1e-12


def _one_sgd_step(readout_learning):
    torch.manual_seed(0)
    m = PCNModule.from_flat(dims=[20, 16, 6], output_dim=4, activations="tanh", amortized=True, latent_init="amortized",
                  T_infer=8, eta_infer=0.1, T_infer_eval=5, eta_infer_eval=0.05, eta_learn=0.5, eta_amort=0.5,
                  optimizer="sgd", readout_learning=readout_learning)
    x = torch.rand(32, 20)
    y = torch.randint(0, 4, (32,))
    start = {k: v.detach().clone() for k, v in m.net.state_dict().items()}
    trainer = L.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(m, torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32))
    return m, start, x, y


def test_label_free_readout_learns_from_the_state_evaluation_reads():
    m, start, x, y = _one_sgd_step("label_free")
    ref, _, _, _ = _one_sgd_step("clamped")
    # W and V learn from the clamped state exactly as before; only R differs
    R_key = "terms.2.map.weight"
    for (k, a), b in zip(m.net.state_dict().items(), ref.net.state_dict().values()):
        assert torch.equal(a, b) == (k != R_key), k
    # R moved by the delta rule on the top latent of a label-free settle from the
    # same starting weights, with evaluation's T and eta (and its latent stream)
    fresh = PCNModule(**m.hparams)
    fresh.net.load_state_dict(start)
    xs, _ = fresh.settle_batch(x, None, fresh.eval_inference, generator=seeding.training_generator(0, 0, 0, 1))
    Y = torch.nn.functional.one_hot(y, 4).float()
    R = start[R_key]
    expected = R + 0.5 * (Y - xs[2] @ R.T).T @ xs[2] / 32
    assert torch.allclose(m.net.terms[2].map.weight, expected, atol=1e-6)
    assert (fresh.eval_inference.T_infer, fresh.eval_inference.eta_infer) == (5, 0.05)
    # evaluation reads exactly that kind of state: logits of the trained model
    xs_eval, _ = m.settle_batch(x, None, m.eval_inference, per_sample_seeds=True)
    assert torch.allclose(m.eval_outputs(x)[0], xs_eval[2] @ m.net.terms[2].map.weight.T)


def test_precision_rule_is_its_free_energy_gradient():
    torch.manual_seed(0)
    m = PCNModule.from_flat(dims=[12, 8, 5], output_dim=3, activations="tanh", learn_precision=True).double()
    Y = torch.nn.functional.one_hot(torch.randint(0, 3, (6,)), 3).double()
    xs = [torch.randn(6, d, dtype=torch.float64) for d in (12, 8, 5)] + [Y]
    log_pi = torch.tensor([0.3, -0.5, 1.2], dtype=torch.float64, requires_grad=True)
    rule = next(r for r in m.rules if r.__class__.__name__ == "Precision")

    def gradients():
        with torch.no_grad():
            for t, lp in zip(m.net.terms, log_pi):
                t.log_precision.copy_(lp)
                t.refresh_precision()
            errors = m.net.errors(xs)
        return errors, torch.stack(rule.gradients(type("S", (), {"errors": errors})()))

    errors, mine = gradients()
    (auto,) = torch.autograd.grad(precision_free_energy(m.net, errors, log_pi), [log_pi])
    assert ((mine - auto).norm() / auto.norm()).item() < 1e-12
    # its fixed point is the inverse mean squared error of each term
    with torch.no_grad():
        log_pi.copy_(torch.tensor([e.eps.numel() / e.eps.pow(2).sum().item() for e in errors], dtype=torch.float64).log())
    assert gradients()[1].abs().max().item() < 1e-9


def test_learned_precision_fixed_point_and_its_runaway():
    """Training only the precisions (weight rates tiny): the input term, which no
    latent can explain away, settles at its inverse mean squared error; a free
    layer's precision keeps growing, because settling shrinks that layer's error as
    its precision grows (F is unbounded below there: the documented failure)."""
    L.seed_everything(0)
    m = PCNModule.from_flat(dims=[20, 16, 4], output_dim=3, activations="tanh", T_infer=5,
                  eta_learn=1e-9, optimizer="sgd", learn_precision=True, eta_precision=0.05)
    x = torch.randn(64, 20)
    y = torch.randint(0, 3, (64,))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=64)
    history = []
    for epochs in (75, 150):
        trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False)
        trainer.fit(m, loader, ckpt_path=None)
        history.append(torch.tensor([t.pi for t in m.net.terms]))
    xs, res = m.settle_batch(x, y, generator=seeding.training_generator(0, 0, 0))
    inverse_mse = [e.eps.numel() / e.eps.pow(2).sum().item() for e in res.errors]
    pi_input, pi_hidden, _ = history[-1].tolist()
    assert abs(pi_input / inverse_mse[0] - 1) < 0.05
    assert pi_hidden > history[0][1].item() > 2.0  # still climbing
