"""Starting from pretrained weights (timm files, original .npz, saved runs); exporting for timm."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file, save_file

import inference
from src.errors import ConfigError
from src.model.pretrained import load_pretrained, read_weights
from src.model.vit import VisionTransformer
from src.training.optim import build_optimizer, finetune_lr_scale
from src.training.run import train
from tests.conftest import TINY_RUN, compose_config
from tests.test_datasets import make_folder

timm_vit = pytest.importorskip(
    "timm.models.vision_transformer", reason="needs timm (requirements-test.txt)"
)

SHAPE = dict(patch_size=4, embed_dim=48, depth=2, num_heads=3)


def timm_model(image_size=32, in_chans=3, num_classes=10):
    torch.manual_seed(0)
    return timm_vit.VisionTransformer(
        img_size=image_size, in_chans=in_chans, num_classes=num_classes, **SHAPE
    ).eval()


def ours(image_size=32, in_chans=3, num_classes=10, **extra):
    return VisionTransformer(
        image_size=image_size, in_chans=in_chans, num_classes=num_classes, **SHAPE, **extra
    ).eval()


def to_original_npz(state: dict, path) -> None:
    """timm names -> the original ViT release's .npz layout (the inverse of what we read)."""
    a = lambda t: t.detach().numpy()  # noqa: E731
    dim, heads = state["cls_token"].shape[-1], SHAPE["num_heads"]
    out = {
        "embedding/kernel": a(state["patch_embed.proj.weight"].permute(2, 3, 1, 0)),
        "embedding/bias": a(state["patch_embed.proj.bias"]),
        "cls": a(state["cls_token"]),
        "Transformer/posembed_input/pos_embedding": a(state["pos_embed"]),
        "Transformer/encoder_norm/scale": a(state["norm.weight"]),
        "Transformer/encoder_norm/bias": a(state["norm.bias"]),
        "head/kernel": a(state["head.weight"].T),
        "head/bias": a(state["head.bias"]),
    }
    for i in range(SHAPE["depth"]):
        b, o = f"Transformer/encoderblock_{i}/", f"blocks.{i}."
        attn = b + "MultiHeadDotProductAttention_1/"
        out[b + "LayerNorm_0/scale"], out[b + "LayerNorm_0/bias"] = (
            a(state[o + "norm1.weight"]),
            a(state[o + "norm1.bias"]),
        )
        out[b + "LayerNorm_2/scale"], out[b + "LayerNorm_2/bias"] = (
            a(state[o + "norm2.weight"]),
            a(state[o + "norm2.bias"]),
        )
        for n, w, bias in zip(
            ("query", "key", "value"),
            state[o + "attn.qkv.weight"].chunk(3),
            state[o + "attn.qkv.bias"].chunk(3),
        ):
            out[f"{attn}{n}/kernel"] = a(w.T.reshape(dim, heads, dim // heads))
            out[f"{attn}{n}/bias"] = a(bias.reshape(heads, dim // heads))
        out[attn + "out/kernel"] = a(
            state[o + "attn.proj.weight"].T.reshape(heads, dim // heads, dim)
        )
        out[attn + "out/bias"] = a(state[o + "attn.proj.bias"])
        for j, fc in ((0, "fc1"), (1, "fc2")):
            out[f"{b}MlpBlock_3/Dense_{j}/kernel"] = a(state[f"{o}mlp.{fc}.weight"].T)
            out[f"{b}MlpBlock_3/Dense_{j}/bias"] = a(state[f"{o}mlp.{fc}.bias"])
    np.savez(path, **out)


@pytest.mark.parametrize("fmt", ["safetensors", "pth", "npz"])
def test_timm_weights_in_every_format_give_timm_s_logits(tmp_path, fmt):
    reference = timm_model()
    state = reference.state_dict()
    path = tmp_path / f"weights.{fmt}"
    if fmt == "safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, path)
    elif fmt == "pth":
        torch.save({"model": state, "epoch": 3}, path)  # wrapped, as training checkpoints are
    else:
        to_original_npz(state, path)
    model = ours()
    report = load_pretrained(model, str(path))
    assert len(report.loaded) == len(model.state_dict()) and not report.resized and not report.new
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), atol=1e-5, rtol=1e-5)


def test_a_new_grid_channels_and_classes_are_fitted_and_reported(tmp_path):
    save_file(
        {k: v.contiguous() for k, v in timm_model().state_dict().items()},
        tmp_path / "w.safetensors",
    )
    model = ours(image_size=16, in_chans=1, num_classes=3)
    report = load_pretrained(model, str(tmp_path / "w.safetensors"))
    assert report.resized == [
        "pos_embed: (1, 65, 48) -> (1, 17, 48)",
        "patch_embed.proj.weight: (48, 3, 4, 4) -> (48, 1, 4, 4)",
    ]
    assert report.new == ["head.weight", "head.bias"]


def test_rgb_weights_read_a_grey_image_as_the_rgb_model_reads_it_in_colour(tmp_path):
    reference = timm_model()
    save_file(
        {k: v.contiguous() for k, v in reference.state_dict().items()}, tmp_path / "w.safetensors"
    )
    grey = ours(in_chans=1)
    load_pretrained(grey, str(tmp_path / "w.safetensors"))
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(grey(x), reference(x.repeat(1, 3, 1, 1)), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "source, message",
    [
        ("no/such/weights.safetensors", "no such file or run folder"),
        ("weights.txt", ".txt is not a weights format this reads"),
    ],
)
def test_unreadable_sources_get_one_sentence(tmp_path, monkeypatch, source, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "weights.txt").write_text("hello")
    with pytest.raises(ConfigError, match=message):
        read_weights(source)


@pytest.mark.parametrize(
    "save, message",
    [
        # trained from scratch, said only in a log line
        (
            lambda path: torch.save({"foo": torch.zeros(3)}, path.with_suffix(".pt")),
            "matched none of the model's weights (it holds foo); "
            "give ViT weights named as timm names them",
        ),
        # AttributeError and KeyError tracebacks
        (
            lambda path: torch.save(torch.zeros(3), path.with_suffix(".pt")),
            "holds a Tensor, not named weights",
        ),
        (
            lambda path: np.savez(path.with_suffix(".npz"), foo=np.zeros(3)),
            "is not in the original ViT release's layout (it has no 'embedding/kernel')",
        ),
    ],
)
def test_weights_that_are_not_a_vit_s_get_one_sentence(tmp_path, save, message):
    save(tmp_path / "w")
    source = next(tmp_path.glob("w.*"))
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_pretrained(ours(), str(source))


def test_a_timm_name_offline_says_to_pass_a_file(monkeypatch):
    import timm

    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co'")

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(
        ConfigError, match="offline, pass a downloaded .safetensors/.pth/.npz file instead"
    ):
        read_weights("vit_tiny_patch16_224.augreg_in21k")


def test_another_width_is_refused_with_the_settings_to_change(tmp_path):
    save_file(
        {k: v.contiguous() for k, v in timm_model().state_dict().items()},
        tmp_path / "w.safetensors",
    )
    model = VisionTransformer(
        image_size=32, patch_size=4, in_chans=3, num_classes=10, embed_dim=24, depth=2, num_heads=3
    )
    with pytest.raises(
        ConfigError, match="use the pretrained model's width, depth, heads and patch size"
    ):
        load_pretrained(model, str(tmp_path / "w.safetensors"))


def test_layer_decay_and_backbone_scale_set_each_group_s_lr():
    model = ours()
    scale = finetune_lr_scale(depth=2, backbone_lr_scale=0.5, layer_decay=0.5)
    assert scale("head.weight") == 1.0 and scale("norm.weight") == 0.5
    assert scale("blocks.1.mlp.fc1.weight") == 0.25 and scale("blocks.0.attn.qkv.weight") == 0.125
    assert scale("pos_embed") == scale("patch_embed.proj.weight") == 0.0625
    factory = compose_config(["optimizer.lr=0.01"]).optimizer
    from hydra.utils import instantiate

    optimizer = build_optimizer(instantiate(factory), model, torch.device("cpu"), scale)
    lr_of = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    assert lr_of[id(model.head.weight)] == pytest.approx(0.01)
    assert lr_of[id(model.blocks[0].attn.qkv.weight)] == pytest.approx(0.00125)


def pet_folder(tmp_path):
    return make_folder(tmp_path / "pets", classes=("cat", "dog", "fox"), per_class=16)


def test_a_run_fine_tunes_from_another_run_on_other_classes_and_size(tmp_path):
    source = tmp_path / "source"
    train(
        compose_config(TINY_RUN + ["model.pos_embed=learned", "trainer.epochs=2"]), source
    )  # digits, 16 px

    target = tmp_path / "target"
    cfg = compose_config(
        TINY_RUN
        + [
            "model.pos_embed=learned",
            "trainer.epochs=4",
            "trainer.num_workers=0",
            "dataset=folder",
            f"dataset.root={pet_folder(tmp_path)}",
            "model.image_size=32",
            "model.patch_size=4",
            f"model.pretrained={source}",
            "scheduler.warmup_epochs=0",
        ]
    )
    train(cfg, target)
    summary = json.loads((target / "summary.json").read_text())
    assert summary["status"] == "completed"
    report = summary["pretrained"]
    assert report["source"] == str(source) and report["new"] == ["head.weight", "head.bias"]
    assert report["resized"] == [
        "pos_embed: (1, 17, 32) -> (1, 65, 32)",  # 16 px -> 32 px
        "patch_embed.proj.weight: (32, 1, 4, 4) -> (32, 3, 4, 4)",
    ]  # grey -> RGB
    losses = pd.read_csv(target / "metrics.csv")["train_loss"]
    assert losses.iloc[-1] < losses.iloc[0]  # it trains


def test_a_linear_probe_changes_only_the_head(tmp_path):
    source = tmp_path / "source"
    train(compose_config(TINY_RUN + ["trainer.epochs=1"]), source)
    probe = tmp_path / "probe"
    train(
        compose_config(
            TINY_RUN
            + ["trainer.epochs=2", f"model.pretrained={source}", "finetune.freeze_backbone=true"]
        ),
        probe,
    )
    before = load_file(source / "weights" / "best.safetensors")
    after = load_file(probe / "weights" / "best.safetensors")
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"head.weight", "head.bias"}


def test_a_run_exports_weights_that_timm_loads(tmp_path):
    run = tmp_path / "run"
    train(compose_config(TINY_RUN + ["trainer.epochs=1"]), run)
    assert inference.main(["--run", str(run), "--export-timm", str(tmp_path / "exported")]) == 0
    config = json.loads((tmp_path / "exported" / "config.json").read_text())
    reference = timm_vit.VisionTransformer(**config["model_args"]).eval()
    reference.load_state_dict(load_file(tmp_path / "exported" / "model.safetensors"), strict=True)
    card = json.loads((run / "model.json").read_text())
    model = VisionTransformer(**card["model"]).eval()
    model.load_state_dict(load_file(run / "weights" / "best.safetensors"))
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(reference(x), model(x), atol=1e-5, rtol=1e-5)
    assert config["label_names"] == [str(i) for i in range(10)]


def test_a_frozen_backbone_runs_without_dropout_and_drop_path():
    """Issue 21: the linear probe trained its head on features made noisy by the backbone's
    dropout and drop-path; in train mode they are now the same every pass, as at test time."""
    from src.model.pretrained import freeze_backbone

    model = ours(drop_rate=0.3, attn_drop_rate=0.3, drop_path_rate=0.5)
    freeze_backbone(model)
    model.train()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        first, second = model.forward_features(x)[0], model.forward_features(x)[0]
        torch.testing.assert_close(first, second, rtol=0, atol=0)
        model.eval()
        torch.testing.assert_close(first, model.forward_features(x)[0])
    assert model.head_drop.p == 0.3  # the head's own input dropout is the probe's to keep


def test_timm_weights_are_fine_tuned_with_their_own_mean_and_std(tmp_path, monkeypatch):
    """Issue 21: a run fine-tuning timm weights normalised with the new dataset's mean/std, not
    the weights' own (augreg's 0.5/0.5, ImageNet's 0.485/0.456/0.406 ...). The config.json that
    timm and the Hub keep beside model.safetensors says which; training, evaluation, model.json
    (and so inference) use it."""
    import src.training.setup as setup_module

    weights = tmp_path / "hub" / "model.safetensors"
    weights.parent.mkdir()
    save_file({k: v.contiguous() for k, v in timm_model().state_dict().items()}, weights)
    imagenet = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    (weights.parent / "config.json").write_text(json.dumps({"pretrained_cfg": imagenet}))
    seen = []
    real = setup_module.make_batches
    monkeypatch.setattr(
        setup_module,
        "make_batches",
        lambda split, size, **kw: seen.append((kw["mean"], kw["std"])) or real(split, size, **kw),
    )
    run = tmp_path / "run"
    train(
        compose_config(
            TINY_RUN
            + [
                "trainer.epochs=1",
                "model.embed_dim=48",
                "model.num_heads=3",
                "model.depth=2",
                "model.mlp_ratio=4",
                f"model.pretrained={weights}",
            ]
        ),
        run,
    )
    grey = ([pytest.approx(sum(imagenet["mean"]) / 3)], [pytest.approx(sum(imagenet["std"]) / 3)])
    assert len(seen) == 3 and all(s == grey for s in seen)  # train, val and test batches
    card = json.loads((run / "model.json").read_text())
    assert (card["mean"], card["std"]) == grey  # digits are grey: the colour values averaged
    assert json.loads((run / "summary.json").read_text())["pretrained"]["mean"] == card["mean"]


@pytest.mark.parametrize(
    "source, expected",
    [
        ("vit_tiny_patch16_224.augreg_in21k", [0.5, 0.5, 0.5]),
        ("deit_tiny_patch16_224.fb_in1k", [0.485, 0.456, 0.406]),
        ("weights.npz", [0.5, 0.5, 0.5]),  # the original ViT release
        ("weights.pth", None),  # nothing says: the dataset's own is used
    ],
)
def test_the_weights_normalisation_is_read_from_their_source(
    tmp_path, monkeypatch, source, expected
):
    from src.model.pretrained import read_normalisation

    monkeypatch.chdir(tmp_path)
    (tmp_path / "weights.npz").write_bytes(b"")
    (tmp_path / "weights.pth").write_bytes(b"")
    found = read_normalisation(source)
    assert (found[0] if found else None) == (pytest.approx(expected) if expected else None)
