"""The predictive coding transformer: its local updates against autograd (float64),
causality, sampling, attention maps, and the random training windows."""

import pytest
import torch
import torch.nn.functional as F

from pcn_lightning import ConfigError, Inference, Learning, TransformerPCNModule, TransformerTwin
from pcn_lightning.inference import settle
from pcn_lightning.primitives import Dropout
from pcn_lightning.rules import OnArrival
from pcn_lightning.text import RandomWindows

LAYERS = [{"token_dense": {"units": 16}, "position": {"std": 0.5}},
          {"transformer_block": {"heads": 2, "mlp_ratio": 2, "init_gain": 0.5}, "repeat": 2},
          {"rmsnorm": {}, "token_dense": {}}]
ONE_SWEEP = Inference(T_infer=1, eta_infer=1.0, latent_init="feedforward", schedule="sequential")


def model(label_precision=1.0, inference=ONE_SWEEP, weight_errors="on_arrival", cls=TransformerPCNModule, layers=LAYERS,
          **kw):
    torch.manual_seed(0)
    learning = Learning(weight_errors=weight_errors, optimizer="adamw")
    extra = {"inference": inference} if cls is TransformerPCNModule else {}
    return cls(layers=layers, context=6, output_dim=7, label_precision=label_precision, learning=learning,
               **extra, **kw).double()


def batch():
    x = torch.randint(0, 7, (3, 6), generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 7, (3, 6), generator=torch.Generator().manual_seed(2))
    return x, y


def backprop(m, x, y):
    """Autograd's gradient of the summed cross-entropy of the prediction sweep."""
    params = [p for t in m.net.terms for p in t.map.parameters()]
    loss = F.cross_entropy(m.logits(x).flatten(0, 1), y.flatten(), reduction="sum")
    return params, torch.autograd.grad(loss, params)


def assert_updates_are_backprop_times(m, scale):
    """m's local updates on one batch are autograd's gradients times `scale`."""
    x, y = batch()
    pc = m.local_gradients(x, y)
    params, auto = backprop(m, x, y)
    assert [p for p, _ in pc] == params
    for (_, g), a in zip(pc, auto):
        assert torch.allclose(g, scale * a, rtol=1e-9, atol=1e-12)


def test_one_sweep_with_errors_on_arrival_is_backprop_times_the_label_precision():
    m = model(label_precision=0.3)
    assert_updates_are_backprop_times(m, 0.3)


def test_on_arrival_moves_the_latents_as_a_plain_sweep_does():
    """OnArrival hands the sweep the transposes it computed with each term's weight
    gradients (first sweep only; later sweeps compute their own): over two sweeps the
    latents end where the same settle without it leaves them."""
    m = model(label_precision=0.3)
    x, y = batch()
    settings = Inference(T_infer=2, eta_infer=0.5, latent_init="feedforward", schedule="sequential")

    @torch.no_grad()
    def settled(arrival):
        start = m.net.initial_state(m.one_hot(x), m.one_hot(y), "feedforward")
        settle(m.net, start.xs, start.free, settings, before_node=arrival and arrival.before_node)
        return start.xs

    arrival = OnArrival(m.net)
    for a, b in zip(settled(None), settled(arrival)):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-14)
    assert sorted(arrival.grads) == [1, 2, 3]  # the terms whose source moves: both blocks and the readout


def test_blocks_without_a_norm_scale_their_branches_and_learn_backprops_gradient():
    """`norm: none, branch_scale: s` (muPC's alternative to a norm): the same exactness,
    the attention maps still found, and a bad setting is one error."""
    block = {"heads": 2, "mlp_ratio": 2, "norm": "none", "branch_scale": 0.35}
    m = model(label_precision=0.3, layers=[LAYERS[0], {"transformer_block": block, "repeat": 2}, LAYERS[2]])
    assert not any(type(p).__name__ == "RMSNorm" for t in m.net.terms[1:3] for p in t.map.modules())
    assert_updates_are_backprop_times(m, 0.3)
    m.vocab = "abcdefg"
    maps = m.attention_maps("abcdef")
    assert len(maps) == 2 and torch.allclose(maps[0].sum(-1), torch.ones(2, 6, dtype=maps[0].dtype))
    for bad, match in (({"norm": "layernorm"}, "norm must be one of"), ({"branch_scale": 0}, "branch_scale")):
        with pytest.raises(ConfigError, match=match):
            model(layers=[LAYERS[0], {"transformer_block": {"heads": 2, **bad}}, LAYERS[2]])


def test_dropout_masks_are_held_for_the_batch_and_shared_with_the_twin():
    """Armed, each dropout map drops the same units for the whole step (the one sweep's
    updates stay backprop's gradients of the dropped network); the twin, armed the same
    way, draws the same masks; unarmed (validation, sampling) the map is the identity."""
    layers = [{"token_dense": {"units": 16}, "position": {"std": 0.5}, "dropout": {"p": 0.2}},
              {"transformer_block": {"heads": 2, "mlp_ratio": 2, "init_gain": 0.5, "dropout": 0.3}, "repeat": 2},
              {"rmsnorm": {}, "token_dense": {}}]
    m, twin = model(layers=layers), model(layers=layers, cls=TransformerTwin)
    x, y = batch()
    with m.dropout_masks() as armed:
        assert armed == 5  # the embedding's and two per block
        pc = m.local_gradients(x, y)
        masks = [d.mask for d in m.net.modules() if isinstance(d, Dropout)]
        params, auto = backprop(m, x, y)  # the same masks, reused
    for (_, g), a in zip(pc, auto):
        assert torch.allclose(g, a, rtol=1e-9, atol=1e-12)
    assert all(mk is not None and 0 < (mk == 0).double().mean() < 0.6 for mk in masks)
    with twin.dropout_masks():
        twin.logits(x)
        assert all(torch.equal(a, d.mask) for a, d in zip(masks, [d for d in twin.net.modules() if isinstance(d, Dropout)]))
    _, clean = backprop(m, x, y)  # unarmed: no dropout, other gradients
    assert not torch.allclose(clean[0], auto[0])
    assert all(d.mask is None and d.generator is None for d in m.net.modules() if isinstance(d, Dropout))
    with pytest.raises(ConfigError, match="p must be"):
        model(layers=[layers[0], {"transformer_block": {"dropout": 1.0}}, layers[2]])


def test_settled_updates_point_along_backprop_at_a_small_label_precision():
    """Settled errors (many parallel steps, learning from the settled state) of a 2-block
    transformer: at a weak clamp every update points along backprop's gradient."""
    m = model(label_precision=0.01, inference=Inference(T_infer=300, eta_infer=0.1, latent_init="feedforward"),
              weight_errors="settled")
    x, y = batch()
    pc = m.local_gradients(x, y)
    _, auto = backprop(m, x, y)
    flat = lambda gs: torch.cat([g.flatten() for g in gs])
    assert F.cosine_similarity(flat([g for _, g in pc]), flat(auto), 0) > 0.99
    assert min(F.cosine_similarity(g.flatten(), a.flatten(), 0) for (_, g), a in zip(pc, auto)) > 0.95
    # what training reports is the feedforward prediction's cross-entropy, taken before settling moves it
    nll = m.settle_for_learning(x, y)[2]
    assert torch.allclose(nll, F.cross_entropy(m.logits(x).flatten(0, 1), y.flatten(), reduction="sum"))


def test_a_later_character_does_not_change_an_earlier_prediction():
    m = model()
    x, _ = batch()
    x2 = x.clone()
    x2[:, 4] = (x2[:, 4] + 1) % 7
    a, b = m.logits(x), m.logits(x2)
    assert torch.equal(a[:, :4], b[:, :4]) and not torch.allclose(a[:, 4:], b[:, 4:])


def test_twin_is_the_same_network_and_initialization():
    pc, twin = model(), model(cls=TransformerTwin)
    assert all(torch.equal(p, q) for p, q in zip(pc.net.parameters(), twin.net.parameters()))
    x, _ = batch()
    assert torch.equal(pc.logits(x), twin.logits(x))


def test_sampling_and_attention_maps():
    m = model()
    m.vocab = "abcdefg"
    text = m.sample("abc", 10, generator=torch.Generator().manual_seed(0))
    assert len(text) == 10 and set(text) <= set(m.vocab)
    maps = m.attention_maps("abcdefgab")  # longer than the context: its last 6 characters
    assert len(maps) == 2 and maps[0].shape == (2, 6, 6)
    assert torch.allclose(maps[0].sum(-1), torch.ones(2, 6, dtype=maps[0].dtype))
    assert torch.all(maps[0].triu(1) == 0)
    with pytest.raises(ConfigError, match="outside the corpus"):
        m.sample("xyz", 3)
    assert len(m.sample("", 3)) == 3  # no new line in this vocabulary: starts from its first character


def test_settings_it_does_not_take_are_refused():
    with pytest.raises(ConfigError, match="t_learn 3"):
        TransformerPCNModule(layers=LAYERS, context=6, output_dim=7, learning=Learning(t_learn=3))


def test_bad_layers_and_lengths_get_one_clear_error():
    with pytest.raises(ConfigError, match="every position"):
        TransformerPCNModule(layers=[{"token_dense": {"units": 8}}, {"flatten": {}, "dense": {}}], context=4, output_dim=5)
    m = model()
    with pytest.raises(ConfigError, match="seq_len 6"):
        m.local_gradients(torch.zeros(2, 5, dtype=torch.long), torch.zeros(2, 5, dtype=torch.long))
    with pytest.raises(ConfigError, match="up to 6"):
        m.logits(torch.zeros(2, 7, dtype=torch.long))


def test_random_windows_are_shifted_targets_seeded_by_epoch():
    ids = torch.arange(100)
    data = RandomWindows(ids, batch=4, seq_len=8, n=3, seed=0)
    x, y = data[0]
    assert x.shape == (4, 8) and torch.equal(y, x + 1)
    again = data[0][0]
    data.set_epoch(1)
    assert torch.equal(again, x) and not torch.equal(data[0][0], x)
    data.set_epoch(0)  # two ranks take the halves of the global batch one device draws
    halves = [RandomWindows(ids, batch=2, seq_len=8, n=3, seed=0, rank=r, world=2)[0][0] for r in (0, 1)]
    assert torch.equal(torch.cat(halves), x)


def test_a_diverged_step_stops_before_the_weights_move():
    from pcn_lightning import DivergenceError

    m = model()
    opt = m.configure_optimizers()
    m.optimizers, m.log = (lambda: opt), (lambda *a, **k: None)
    with torch.no_grad():
        m.net.terms[1].map.attention.wq.fill_(float("nan"))
    before = [p.clone() for p in m.net.terms[0].map.parameters()]
    with pytest.raises(DivergenceError, match="became nan"):
        m.training_step(batch(), 0)
    assert all(torch.equal(a, b) for a, b in zip(before, m.net.terms[0].map.parameters()))


def test_random_windows_follow_lightnings_epoch(corpus):
    """Lightning tells the sampler the epoch (as it does a DistributedSampler): new windows each epoch."""
    from lightning.fabric.utilities.data import _set_sampler_epoch

    from pcn_lightning import ShakespeareCharDataModule

    dm = ShakespeareCharDataModule(data_dir=str(corpus.parent), batch_size=4, seq_len=8, windows="random")
    dm.setup("fit")
    loader = dm.train_dataloader()
    first = next(iter(loader))[0]
    _set_sampler_epoch(loader, 1)
    assert loader.dataset.epoch == 1 and not torch.equal(next(iter(loader))[0], first)


def test_text_loaders_are_kept_by_lightning_under_ddp(corpus):
    """The streams and the windows are already each rank's share: Lightning must keep their
    samplers (a sampler it substitutes would split the batches across the ranks again)."""
    from pcn_lightning import ShakespeareCharDataModule
    from torch.utils.data import DistributedSampler

    dm = ShakespeareCharDataModule(data_dir=str(corpus.parent), batch_size=4, seq_len=8, windows="random")
    dm.setup("fit")
    for loader in (dm.train_dataloader(), dm.val_dataloader()):
        assert isinstance(loader.sampler, DistributedSampler)  # what Lightning leaves as it is
        assert list(loader.sampler) == list(range(len(loader.dataset)))  # every batch of this rank's share


@pytest.mark.parametrize("windows", ["random", "streams"])
def test_a_resumed_epoch_skips_the_batches_already_trained_on(corpus, windows):
    from pcn_lightning import ShakespeareCharDataModule

    dm = ShakespeareCharDataModule(data_dir=str(corpus.parent), batch_size=2, seq_len=8, windows=windows)
    dm.setup("fit")
    full = [x for x, _ in dm.train_dataloader()]
    dm.load_state_dict({"batches_done": 2})
    loader = dm.train_dataloader()
    resumed = [x for x, _ in loader]
    assert len(resumed) == len(full) - 2 and all(torch.equal(a, b) for a, b in zip(resumed, full[2:]))
    assert len([x for x, _ in loader]) == len(full)  # the next epoch is whole
