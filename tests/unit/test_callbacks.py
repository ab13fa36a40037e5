"""Each diagnostic is fed the failure it exists to catch and stays quiet when healthy;
a real training run writes every panel to TensorBoard under the documented tags."""

import warnings

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.data import DataLoader, TensorDataset

from callbacks._common import PCNDiagnosticWarning
from callbacks.layer_balance import LayerBalance, balance_report
from callbacks.layer_error_heatmap import LayerErrorHeatmap
from callbacks.prediction_range import PredictionRange
from callbacks.settle_check import SettleCheck, settle_report
from callbacks.weight_stats import WeightStats
from pcn_lightning import PCNModule


def loader(n=64, d=20, classes=4, normalized=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, d, generator=g)
    if normalized:
        x = (x - x.mean(0)) / x.std(0)  # half the values are negative
    y = torch.randint(0, classes, (n,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=16)


def fit(module, callbacks, logger=False, epochs=1, data=None):
    trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", logger=logger, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks,
                        log_every_n_steps=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(module, data or loader())
    return [str(w.message) for w in caught if issubclass(w.category, PCNDiagnosticWarning)]


def module(**kw):
    torch.manual_seed(0)  # the weights must not depend on which tests ran before
    base = dict(dims=[20, 16, 8], output_dim=4, activations="tanh", T_infer=30, eta_infer=0.05, eta_learn=0.01)
    return PCNModule.from_flat(**{**base, **kw})


def test_settle_check_warns_when_inference_is_cut_short():
    cb = SettleCheck(every_n_steps=1, tol=0.01)
    msgs = fit(module(T_infer=3, eta_infer=0.02), [cb])
    assert any("has not settled" in m and "raise T_infer" in m for m in msgs)
    assert not cb.reports[0].settled and cb.reports[0].rel_drop > 0.01


def test_settle_check_quiet_when_settled():
    cb = SettleCheck(every_n_steps=1, tol=0.01)
    msgs = fit(module(T_infer=400, eta_infer=0.1), [cb])
    assert not [m for m in msgs if "settled" in m]
    assert all(r.settled for r in cb.reports)


def test_settle_check_has_nothing_to_check_for_errors_on_arrival():
    """One sweep at eta 1 overshoots (the energy rises by its end: a settled model would be
    diverging), but errors on arrival learn from the sweep as it passes: no warning."""
    cb = SettleCheck(every_n_steps=1, tol=0.01)
    sweep = dict(T_infer=1, eta_infer=1.0, schedule="sequential", latent_init="feedforward", direction="discriminative")
    m = module(**sweep, weight_errors="on_arrival")
    with torch.no_grad():
        for t in m.net.terms:
            t.map.weight.mul_(3.0)  # ||J||^2 > 2: the sweep's end sits above its start
    msgs = fit(m, [cb])
    assert not msgs and not cb.reports
    settled = fit(module(**sweep), [SettleCheck(every_n_steps=1)])
    assert settled  # the same sweep, learning from the settled errors: checked, and flagged


def test_settle_report_numbers():
    falling = torch.linspace(10, 5, 21).unsqueeze(1)
    flat = torch.cat([torch.linspace(10, 5, 11), torch.full((10,), 5.0)]).unsqueeze(1)
    assert not settle_report(falling, 0.01).settled
    assert settle_report(flat, 0.01).settled


def test_prediction_range_flags_relu_under_normalized_input():
    cb = PredictionRange(threshold=0.01)
    msgs = fit(module(activations=["relu", "tanh"]), [cb], data=loader(normalized=True))
    assert cb.reports[0].share > 0.3
    assert any("layer0" in m and "'relu'" in m and "linear" in m for m in msgs)


def test_prediction_range_quiet_with_linear_layer0():
    cb = PredictionRange(threshold=0.01)
    msgs = fit(module(activations=["linear", "tanh"]), [cb], data=loader(normalized=True))
    assert cb.reports[0].share == 0.0
    assert not [m for m in msgs if "clamped values" in m]


def test_prediction_range_sigmoid_and_tanh():
    m = module(activations=["sigmoid", "tanh"])
    from callbacks.prediction_range import range_reports
    x = torch.tensor([[0.0, 0.5, 1.0, 2.0]])
    # sigmoid approaches 0 and 1 in the limit, but cannot produce 2
    assert range_reports(m, x, torch.tensor([0]))[0].share == 0.25
    assert range_reports(m, torch.tensor([[-0.1, 0.5, 1.1, 0.0]]), torch.tensor([0]))[0].share == 0.5
    m2 = module(activations=["tanh", "tanh"])
    assert range_reports(m2, torch.tensor([[-2.0, 0.0, 0.5, 0.9]]), torch.tensor([0]))[0].share == 0.25


def test_layer_balance_flags_a_dominated_energy():
    dominated = balance_report(torch.tensor([90.0, 5.0, 5.0]), ["layer0", "layer1", "readout"], 0.5)
    assert dominated.dominated and dominated.names[dominated.worst] == "layer0"
    assert "layer0 holds 90.0%" in dominated.message()
    healthy = balance_report(torch.tensor([3.0, 3.0, 4.0]), ["layer0", "layer1", "readout"], 0.5)
    assert not healthy.dominated


def test_layer_balance_in_training():
    # 20 normalized inputs vs an 8-d latent: layer 0 dominates the energy
    cb = LayerBalance(threshold=0.5)
    msgs = fit(module(activations="linear"), [cb], data=loader(normalized=True))
    assert cb.reports and cb.reports[0].dominated
    assert any("holds" in m for m in msgs)
    cb2 = LayerBalance(threshold=0.999)
    msgs2 = fit(module(activations="linear"), [cb2], data=loader(normalized=True))
    assert not cb2.reports[0].dominated and not any("holds" in m for m in msgs2)


def test_event_files_hold_the_panels(tmp_path):
    logger = TensorBoardLogger(str(tmp_path), name="run")
    cbs = [PredictionRange(), SettleCheck(every_n_steps=2), LayerErrorHeatmap(), LayerBalance(), WeightStats(every_n_steps=1)]
    fit(module(), cbs, logger=logger, epochs=2)
    ea = EventAccumulator(logger.log_dir, size_guidance={"images": 0, "scalars": 0, "histograms": 0})
    ea.Reload()
    images = set(ea.Tags()["images"])
    scalars = set(ea.Tags()["scalars"])
    assert {"diagnostics/layer_error_heatmap", "diagnostics/layer_error_curves", "settle/energy_curve"} <= images
    assert len(ea.Images("diagnostics/layer_error_heatmap")) == 2  # one per epoch
    for tag in ["settle/rel_drop", "settle/settled", "settle/energy_last", "layer_error/total_layer0",
                "layer_error/per_element_layer1", "balance/share_layer0", "balance/max_share",
                "range/out_of_range_layer0", "weights/norm_W0", "weights/update_norm_readout",
                "train/energy_step", "train/energy_layer0"]:
        assert tag in scalars, tag
    assert "weights/W0" in ea.Tags()["histograms"]


def test_settle_report_sees_a_layer_hidden_by_a_dominant_one():
    """The seed's deep setup on Fashion-MNIST: layer 0 plateaus at once and holds most
    of the energy while the layers above are still descending."""
    trace = torch.stack([torch.full((26,), 100.0), torch.linspace(10, 1, 26)], 1)
    report = settle_report(trace, 0.01)
    assert report.rel_drop < 0.01  # the total alone would look settled
    assert not report.settled and report.worst_layer == 1
    assert "layer1" in report.message(0.01, 25, 0.05, ["layer0", "layer1"])


def test_settle_check_tells_backprops_regime_from_pc_proper():
    """The regime scalars separate the two regimes they name: a weak label precision
    (1e-4, settled to convergence) learns along backprop's gradient with latents barely
    moved; the label clamped (precision 1) on grown weights reshapes the errors (PC proper)."""
    from callbacks.settle_check import backprop_cosines, displacements, regime
    from pcn_lightning import NetworkSpec, PCNModule
    from pcn_lightning.settings import Inference

    def probe(label_precision, grow):
        torch.manual_seed(0)
        m = PCNModule(NetworkSpec(direction="discriminative", dims=[10, 8, 6], activations="tanh",
                                  precisions=[1.0, 1.0, label_precision]),
                      Inference(T_infer=200, eta_infer=0.2, latent_init="feedforward"), input_shape=[10],
                      output_dim=4).double()
        with torch.no_grad():
            for p in m.net.parameters():
                p.mul_(grow)
        g = torch.Generator().manual_seed(1)
        x, y = torch.randn(16, 10, generator=g, dtype=torch.float64), torch.randint(0, 4, (16,), generator=g)
        xs, result = m.settle_probe(x, y, torch.Generator().manual_seed(0))
        return backprop_cosines(m, x, y, result.errors), displacements(m, x, xs)

    weak_cos, weak_moved = probe(1e-4, 1.0)
    clamped_cos, clamped_moved = probe(1.0, 3.0)
    assert set(weak_cos) == {"layer1", "layer2", "readout"}
    assert min(weak_cos.values()) > 0.999 and regime(min(weak_cos.values())) == "approximately backprop"
    assert min(clamped_cos.values()) < 0.9 and regime(min(clamped_cos.values())) == "PC proper"
    assert max(weak_moved.values()) < 1e-3 < max(clamped_moved.values())
