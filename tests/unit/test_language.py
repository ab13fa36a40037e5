"""The temporal PC language model: the data's split and streams, the step's local
rules against autograd, no label in validation inference, training through
train.py (PC and its BPTT twin), sampling."""

import hashlib

import pytest
import torch

from pcn_lightning import TemporalPCNModule, TemporalTwin
from pcn_lightning.settings import Inference, Learning
from pcn_lightning.text import MD5, ShakespeareCharDataModule
from tests.conftest import REPO, SHAKESPEARE_TEXT as TEXT

SHARED = REPO.parent / "shared" / "data" / "tinyshakespeare" / "input.txt"
def test_split_and_contiguous_streams(corpus):
    dm = ShakespeareCharDataModule(data_dir=str(corpus.parent), batch_size=3, seq_len=5)
    dm.setup()
    assert dm.vocab == "".join(sorted(set(TEXT)))
    assert len(dm.train_ids) == int(len(TEXT) * 0.9) and len(dm.val_ids) == len(TEXT) - int(len(TEXT) * 0.9)
    batches = list(dm.train_dataloader())
    x0, y0 = batches[0]
    x1, _ = batches[1]
    assert x0.shape == (3, 5) and torch.equal(x0[:, 1:], y0[:, :-1])  # targets: the next characters
    assert torch.equal(x1[:, 0], y0[:, -1])  # each stream goes on where the last batch stopped
    text = "".join(dm.vocab[i] for i in x0[0]) + "".join(dm.vocab[i] for i in x1[0])
    assert text == TEXT[:10]


@pytest.mark.skipif(not SHARED.exists(), reason="the full corpus is not here (../shared/data/tinyshakespeare)")
def test_the_full_corpus():
    assert hashlib.md5(SHARED.read_bytes()).hexdigest() == MD5
    dm = ShakespeareCharDataModule(data_dir=str(SHARED.parent), batch_size=64, seq_len=64)
    dm.setup()
    assert len(dm.vocab) == 65 and len(dm.train_ids) + len(dm.val_ids) == 1_115_394


def test_a_step_learns_by_the_gradient_of_its_per_step_energies():
    """One training step's hand-set gradient equals autograd of the sum over characters
    of each step's energy at its settled state (contexts and states held fixed)."""
    torch.manual_seed(0)
    m = TemporalPCNModule(hidden=6, window=2, output_dim=5, label_precision=0.7).double()
    x, y = torch.randint(0, 5, (3, 4)), torch.randint(0, 5, (3, 4))
    # replay the steps to record the settled states
    ref = TemporalPCNModule(hidden=6, window=2, output_dim=5, label_precision=0.7).double()
    ref.load_state_dict(m.state_dict())
    ref.ensure_state("train", 3)
    energy = 0.0
    from pcn_lightning.inference import settle
    for t in range(4):
        ctx = ref.context("train", x[:, t])
        label = torch.nn.functional.one_hot(y[:, t], 5).double()
        xs, free, _ = ref.net.initial_state(ctx, label, "feedforward")
        predicted = xs[ref.recurrent].clone()
        with torch.no_grad():
            settle(ref.net, xs, free, ref.inference)
        energy = energy + ref.net.direct_energy([v.detach() for v in xs])
        ref.set_recurrent("train", predicted)
    auto = torch.autograd.grad(energy, list(ref.hebbian.parameters()))
    pairs, _, _ = m.local_gradients(x, y)  # summed over the 12 characters, as the energy is
    assert [p for p, _ in pairs] == list(m.hebbian.parameters())
    for (_, g), a in zip(pairs, auto):
        assert torch.allclose(g, a, rtol=1e-9, atol=1e-12)


def _updates(label_precision: float, recurrent: bool = False, through_time: bool = True,
             readout_gain: float = 1.0, hidden_gain: float = 1.0, extra_layers: int = 0) -> list[tuple[float, float]]:
    """(cosine, norm ratio), one per parameter, between the PC model's local updates on
    one batch and its twin's backprop gradient (windowed by default: no recurrence, so
    backprop's gradient is exact); the gains scale the readout's and the hidden layers'
    weights (as training grows them)."""
    torch.manual_seed(0)
    inference = Inference(T_infer=4, eta_infer=0.5, latent_init="feedforward", step_size="normalized")
    pc = TemporalPCNModule(hidden=16, window=3, output_dim=7, recurrent=recurrent, label_precision=label_precision,
                           extra_layers=extra_layers, inference=inference).double()
    with torch.no_grad():
        pc.net.terms[-1].map.weight.mul_(readout_gain)
        for t in pc.net.terms[1:-1]:
            t.map.weight.mul_(hidden_gain)
    twin = TemporalTwin(hidden=16, window=3, output_dim=7, recurrent=recurrent, extra_layers=extra_layers,
                        through_time=through_time).double()
    twin.load_state_dict(pc.state_dict())
    twin.log = lambda *a, **k: None
    x, y = torch.randint(0, 7, (4, 12)), torch.randint(0, 7, (4, 12))
    pairs, _, _ = pc.local_gradients(x, y)
    assert [p for p, _ in pairs] == list(pc.net.parameters())
    local = [g / x.numel() for _, g in pairs]  # the mean, as training hands it to the optimizer
    bp = torch.autograd.grad(twin.training_step((x, y), 0), list(twin.net.parameters()))
    return [(float(torch.nn.functional.cosine_similarity(p.flatten(), g.flatten(), 0)), float(p.norm() / g.norm()))
            for p, g in zip(local, bp)]


def _update_cosines(label_precision: float, **kw) -> list[float]:
    return [c for c, _ in _updates(label_precision, **kw)]


def test_a_weakly_clamped_label_makes_the_local_updates_backprops():
    """Why the shipped config's label precision is small: the categorical error p - y is
    O(1), so a label of precision 1 pulls the latent far from its prediction and the
    readout's update (taken at the settled latent) turns away from backprop's gradient;
    a weak clamp moves it by O(precision), and every update points along backprop's."""
    strong, weak = _update_cosines(1.0), _update_cosines(0.01)
    assert min(weak) > 0.999
    assert strong[2] < 0.9  # the readout's weights
    assert _update_cosines(0.05)[2] > _update_cosines(0.3)[2] > strong[2]


def test_grown_readout_weights_undo_a_weak_clamp():
    """Normalized steps divide by a curvature bound that grows as precision x ||W_out||^2,
    so as training grows the readout's weights (about 5x in the shipped run) the top
    latent again moves far enough to turn the readout's update away from backprop's;
    a weaker clamp brings it back."""
    at = {p: _update_cosines(p, readout_gain=10.0)[2] for p in (0.05, 0.01, 0.002)}
    assert _update_cosines(0.05)[2] > 0.99  # the same clamp on the initial weights
    assert at[0.05] < 0.97 and at[0.002] > 0.999
    assert at[0.05] < at[0.01] < at[0.002]


def test_the_lower_layers_updates_shrink_as_the_weights_grow():
    """Normalized steps shrink as the weights grow, and with them the settled errors of
    the layers below: every update keeps its direction, not its scale (why Adam's beta2
    is 0.9 in the shipped config: its running RMS must follow a drifting scale;
    benchmarks/language_scale.py)."""
    small, grown = _updates(0.01, extra_layers=1), _updates(0.01, extra_layers=1, hidden_gain=4.0)
    assert grown[0][1] < small[0][1] / 5  # the bottom layer's update, relative to backprop's
    assert abs(grown[-2][1] / small[-2][1] - 1) < 0.01  # the readout's: the label's precision
    assert min(c for c, _ in small + grown) > 0.99


def test_temporal_pc_is_backprop_with_one_step_credit():
    """Weakly clamped, temporal PC's updates are the gradient of backprop with z(t-1)
    detached at every character (the twin's `through_time: false`), not BPTT's: the
    recurrent layer's update turns away from BPTT's, the readout's does not."""
    one_step = _update_cosines(0.01, recurrent=True, through_time=False)
    bptt = _update_cosines(0.01, recurrent=True, through_time=True)
    assert min(one_step) > 0.999
    assert bptt[0] < 0.9 and bptt[2] > 0.999  # the recurrent layer's weights; the readout's


def test_validation_never_sees_the_targets(corpus):
    """The next character is predicted from the past only: shuffled targets, same predictions."""
    torch.manual_seed(0)
    m = TemporalPCNModule(hidden=8, window=3, output_dim=len(set(TEXT)))
    x, y = torch.randint(0, m.vocab_size, (2, 12)), torch.randint(0, m.vocab_size, (2, 12))

    def predictions(targets):
        m.reset_state("val", 2)
        return torch.stack([m.step_logits("val", x[:, t]) for t in range(12)])

    a = predictions(y)
    b = predictions(y[:, torch.randperm(12)])
    assert torch.equal(a, b)


@pytest.mark.parametrize("label_precision,gain", [(1.0, 1.0), (0.01, 5.0)])
def test_errors_on_arrival_are_one_step_backprop_exactly(label_precision, gain):
    """With one sequential sweep at step 1 and each term learning from its error on
    arrival, every character's update is the one-step twin's gradient (z(t-1) detached)
    times the label precision, exactly: at any clamp strength and grown weights."""
    torch.manual_seed(0)
    inference = Inference(T_infer=1, eta_infer=1.0, latent_init="feedforward", schedule="sequential")
    learning = Learning(eta_learn=0.002, optimizer="adam", weight_errors="on_arrival")
    pc = TemporalPCNModule(hidden=16, window=3, output_dim=7, extra_layers=1, label_precision=label_precision,
                           inference=inference, learning=learning).double()
    with torch.no_grad():
        for t in pc.net.terms:
            t.map.weight.mul_(gain)
    twin = TemporalTwin(hidden=16, window=3, output_dim=7, extra_layers=1, through_time=False).double()
    twin.load_state_dict(pc.state_dict())
    twin.log = lambda *a, **k: None
    x, y = torch.randint(0, 7, (4, 12)), torch.randint(0, 7, (4, 12))
    pairs, _, _ = pc.local_gradients(x, y)
    bp = torch.autograd.grad(twin.training_step((x, y), 0), list(twin.net.parameters()))
    for (_, g), b in zip(pairs, bp):
        assert torch.allclose(g / x.numel(), label_precision * b, rtol=1e-9, atol=1e-13)
