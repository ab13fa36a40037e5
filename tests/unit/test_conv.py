"""Convolutional PCNs end to end: the shipped conv configs train through train.py
(Fashion-MNIST on a fixture; the CIFAR VGG-5 configs on tiny CIFAR-format
fixtures), the prepared GPU script runs its path on the CPU, and a conv network's
label-free evaluation is the feedforward sweep."""


import torch

from pcn_lightning import PCNModule

TINY = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
        "--trainer.limit_test_batches", "1", "--trainer.enable_progress_bar", "false"]










def test_label_free_conv_prediction_is_the_feedforward_sweep():
    torch.manual_seed(0)
    m = PCNModule.from_flat(direction="discriminative", layers=[
        {"conv": {"channels": 4, "kernel": 3, "padding": 1}, "maxpool": 2, "activation": "relu"},
        {"conv": {"channels": 6, "kernel": 3, "stride": 2}, "activation": "tanh"},
        {"flatten": {}, "dense": {"units": 12}, "activation": "relu"},
        {"dense": {}},
    ], input_shape=[1, 12, 12], output_dim=5, latent_init="feedforward", T_infer=5)
    x = torch.rand(3, 144)
    from pcn_lightning.builders import twin_forward
    assert torch.equal(m.predict_logits(x), twin_forward(m.net, x))
    assert m.predict_logits(x).shape == (3, 5)
