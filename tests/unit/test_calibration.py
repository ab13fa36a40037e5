"""ECE and AUROC on hand-made inputs with known answers; the reliability callback
writes its image and scalar."""

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from pcn_lightning import PCNModule
from pcn_lightning.calibration import auroc, expected_calibration_error, reliability


def test_ece_known_answers():
    labels = torch.tensor([0, 0, 0, 0])
    # perfectly calibrated: confidence 0.75 and 3 of 4 right
    p = torch.tensor([[0.75, 0.25]] * 4)
    wrong = torch.tensor([0, 0, 0, 1])
    assert expected_calibration_error(p, wrong) == pytest.approx(0.0, abs=1e-12)
    # always confident (0.95), half right: gap 0.45
    p2 = torch.tensor([[0.95, 0.05]] * 4)
    assert expected_calibration_error(p2, torch.tensor([0, 1, 0, 1])) == pytest.approx(0.45)
    # two bins: confidence 0.62 all right (gap 0.38), confidence 0.9 all wrong (gap 0.9); equal halves
    p3 = torch.tensor([[0.62, 0.38], [0.62, 0.38], [0.9, 0.1], [0.9, 0.1]])
    y3 = torch.tensor([0, 0, 1, 1])
    assert expected_calibration_error(p3, y3) == pytest.approx(0.5 * 0.38 + 0.5 * 0.9, abs=1e-6)
    r = reliability(p3, y3, 15)
    assert r["count"].sum() == 4 and r["count"][9] == 2 and r["count"][13] == 2  # 0.62 -> (0.6, 0.667], 0.9 -> bin 13


def test_auroc_known_answers():
    assert auroc(torch.tensor([0.0, 1.0]), torch.tensor([2.0, 3.0])) == 1.0
    assert auroc(torch.tensor([2.0, 3.0]), torch.tensor([0.0, 1.0])) == 0.0
    assert auroc(torch.tensor([1.0, 1.0]), torch.tensor([1.0, 1.0])) == 0.5
    assert auroc(torch.tensor([0.0, 2.0]), torch.tensor([1.0, 3.0])) == pytest.approx(0.75)
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2000, generator=g), torch.randn(2000, generator=g) + 1.0
    brute = ((b[None, :] > a[:, None]).double().mean() + 0.5 * (b[None, :] == a[:, None]).double().mean()).item()
    assert auroc(a, b) == pytest.approx(brute, abs=1e-9)


def test_reliability_callback_writes_its_image(tmp_path):
    from callbacks.reliability import ReliabilityDiagram

    torch.manual_seed(0)
    x = torch.rand(64, 20)
    y = torch.randint(0, 4, (64,))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    m = PCNModule.from_flat(dims=[20, 16, 8], output_dim=4, T_infer=5, predictive_precision=True, eta_learn=0.01,
                            optimizer="adam")
    logger = TensorBoardLogger(str(tmp_path), name="rel")
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", logger=logger, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[ReliabilityDiagram()])
    trainer.fit(m, loader, loader)
    ea = EventAccumulator(logger.log_dir, size_guidance={"images": 0, "scalars": 0})
    ea.Reload()
    assert "calibration/reliability" in ea.Tags()["images"]
    assert len(ea.Images("calibration/reliability")) == 2
    assert "val/ece" in ea.Tags()["scalars"]
    assert "precision/predictive" in ea.Tags()["scalars"]


def test_the_squared_error_twin_fits_its_temperature_by_the_pcns_rule_and_rate():
    """BackpropTwin's predictive precision: one step of `rules.predictive_precision_gradient`
    at `learning.eta_precision`; sure, correct scores raise it, sure, wrong ones lower it."""
    from pcn_lightning import BackpropTwin, Learning
    from pcn_lightning.rules import predictive_precision_gradient

    twin = BackpropTwin.from_flat(dims=[6, 5, 3], output_dim=3)
    twin.learning = Learning(eta_precision=0.05)
    onehot = torch.eye(3)[[0, 1, 2, 0]]
    for scores, direction in ((2.0 * onehot, 1), (2.0 * onehot[[1, 2, 0, 1]], -1)):
        twin.predictive_log_precision.zero_()
        g = predictive_precision_gradient(torch.zeros(()), scores, onehot) / 4
        twin._fit_predictive_precision(scores, onehot)
        assert torch.allclose(twin.predictive_log_precision, -0.05 * g)
        assert torch.sign(twin.predictive_log_precision) == direction
