"""The poswise model file (poswise.io): round trips, atomic writes, damaged files."""
import json
import os
import pickle
import stat
import struct
import zipfile
from io import BytesIO

import numpy as np
import pytest

import poswise
from poswise import io
from poswise.io import ModelFileError, load_model, read_model_file, save_model
from poswise.network import ACTIVATIONS, OUTPUTS

DTYPES = (np.float32, np.float64)
SIZES = ((3, 1), (4, 5, 2), (6, 4, 3, 3, 2))


def params(net):
    return [np.array(a) for a in net.weights + net.biases]


def assert_same_net(a, b):
    assert a.sizes == b.sizes
    assert a.dtype is b.dtype
    assert (a.activation, a.leak, a.output, a.init) == (b.activation, b.leak, b.output, b.init)
    for x, y in zip(params(a), params(b)):
        assert x.dtype == y.dtype and x.shape == y.shape
        assert x.tobytes() == y.tobytes()          # bit for bit, -0.0 and NaN included


def npz_contents(path):
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def write_npz(path, arrays, compressed=False):
    (np.savez_compressed if compressed else np.savez)(path, **arrays)
    if not str(path).endswith(".npz"):
        os.replace(str(path) + ".npz", path)


def metadata_of(arrays):
    return json.loads(arrays["metadata"].tobytes().decode())


def with_metadata(arrays, meta, *, reseal=True):
    """A copy of ``arrays`` carrying ``meta``; resealed with a valid sha256 (a forger who
    knows the format), so that the check under test is not the integrity check."""
    arrays = dict(arrays)
    if reseal:
        data = {k: v for k, v in arrays.items() if k != "metadata"}
        meta = dict(meta, sha256=io._digest(meta, data))
    arrays["metadata"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    return arrays


@pytest.fixture
def net():
    return poswise.MLP((4, 5, 3, 2), activation="tanh", output="softmax", rng=0)


@pytest.fixture
def saved(tmp_path, net):
    path = tmp_path / "model.npz"
    save_model(net, path)
    return path


def X_for(net, n=7, seed=1):
    return np.random.default_rng(seed).standard_normal((n, net.sizes[0])) * 3


# ------------------------------------------------------------------------ round trips
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sizes", SIZES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("output", OUTPUTS)
def test_round_trip_predictions_identical(tmp_path, dtype, sizes, activation, output):
    if output in ("softmax", "cosine") and sizes[-1] < 2:
        sizes = sizes[:-1] + (2,)
    net = poswise.MLP(sizes, activation=activation, output=output, dtype=dtype, rng=3,
                      leak=0.2, init="he_normal")
    net.biases[-1][:] = np.linspace(-1, 1, sizes[-1])   # non-zero biases are stored too
    path = tmp_path / "m.npz"
    save_model(net, path)
    loaded = load_model(path)
    assert_same_net(net, loaded)
    X = X_for(net)
    for method in ("decision_function", "predict_proba", "predict"):
        a, b = getattr(net, method)(X), getattr(loaded, method)(X)
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), method


@pytest.mark.parametrize("dtype", DTYPES)
def test_loaded_network_trains_like_the_original(tmp_path, dtype):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((30, 5))
    y = (X[:, 0] > 0).astype(float)
    net = poswise.MLP((5, 4, 1), dtype=dtype, rng=1)
    poswise.GradientDescent(0.5).fit(net, X, y, epochs=3)
    save_model(net, tmp_path / "m.npz")
    loaded = load_model(tmp_path / "m.npz")
    assert all(w.flags.c_contiguous and w.flags.writeable and w.dtype.isnative
               for w in loaded.weights + loaded.biases)
    h1 = poswise.PositionWise(0.3).fit(net, X, y, epochs=4)
    h2 = poswise.PositionWise(0.3).fit(loaded, X, y, epochs=4)
    assert h1.loss == h2.loss
    assert_same_net(net, loaded)


def test_from_arrays_network_keeps_init_none(tmp_path):
    net = poswise.MLP.from_arrays([np.eye(2)], [np.zeros(2)], activation="identity",
                                  leak=0.0, output="identity")
    save_model(net, tmp_path / "m.npz")
    loaded = load_model(tmp_path / "m.npz")
    assert loaded.init is None
    assert_same_net(net, loaded)


def test_metadata_and_arrays_round_trip(tmp_path, net):
    meta = {"epoch": np.int64(12), "lr": np.float32(0.5), "note": "ünïcode ✓",
            "history": {"loss": [1.0, 0.5, None], "stopped_reason": "max_epochs"},
            "pair": (1, 2), "nested": {"deep": [{"x": True}]}}
    arrays = {"C": np.arange(12.0).reshape(3, 4), "mask": np.array([True, False]),
              "counts": np.arange(5, dtype=np.int32), "scalar": np.float64(2.5),
              "empty": np.zeros((0, 3), np.float32), "z": np.array([1 + 2j]),
              "fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
              "strided": np.arange(10.0)[::-2]}
    path = tmp_path / "ckpt.npz"
    save_model(net, path, metadata=meta, arrays=arrays)
    loaded, meta2, arrays2 = read_model_file(path)
    assert_same_net(net, loaded)
    assert meta2 == {"epoch": 12, "lr": float(np.float32(0.5)), "note": "ünïcode ✓",
                     "history": {"loss": [1.0, 0.5, None], "stopped_reason": "max_epochs"},
                     "pair": [1, 2], "nested": {"deep": [{"x": True}]}}
    assert sorted(arrays2) == sorted(arrays)
    for k, v in arrays.items():
        v = np.asarray(v)
        assert arrays2[k].dtype == v.dtype and arrays2[k].shape == v.shape, k
        assert np.array_equal(arrays2[k], v), k
        assert arrays2[k].flags.c_contiguous
    # load_model reads checkpoints too, ignoring the extras
    assert_same_net(net, load_model(path))


def test_defaults_and_file_layout(saved, net):
    _, meta, arrays = read_model_file(saved)
    assert meta == {} and arrays == {}
    contents = npz_contents(saved)
    assert sorted(contents) == ["biases_0", "biases_1", "biases_2", "metadata",
                                "weights_0", "weights_1", "weights_2"]
    assert contents["metadata"].dtype == np.uint8
    m = metadata_of(contents)
    assert m["format"] == "poswise-mlp" and m["format_version"] == io.FORMAT_VERSION == 1
    assert m["poswise_version"] == poswise.__version__
    assert m["sizes"] == [4, 5, 3, 2] and m["dtype"] == "float64"
    assert (m["activation"], m["output"], m["init"], m["leak"]) == (
        "tanh", "softmax", "xavier_normal", 0.01)
    assert len(m["sha256"]) == 64 and m["extra_arrays"] == [] and m["user"] == {}
    # an ordinary np.load reads it without pickle
    for k, v in contents.items():
        assert v.dtype != object, k


def test_path_used_as_given(tmp_path, net):
    path = tmp_path / "model.bin"
    save_model(net, str(path))
    assert path.exists() and not (tmp_path / "model.bin.npz").exists()
    assert_same_net(net, load_model(str(path)))
    assert sorted(os.listdir(tmp_path)) == ["model.bin"]


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_file_mode_follows_umask(tmp_path, net):
    old = os.umask(0o022)
    try:
        save_model(net, tmp_path / "m.npz")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "m.npz").st_mode) == 0o644


def test_overwrite_replaces_the_file(saved):
    other = poswise.MLP((2, 2), rng=5, output="identity")
    save_model(other, saved)
    assert_same_net(other, load_model(saved))
    assert os.listdir(saved.parent) == ["model.npz"]


def test_save_during_dual_fit_reads_current_weights(tmp_path):
    # A callback saving a checkpoint mid-fit must see the materialised dual first layer.
    rng = np.random.default_rng(0)
    X = rng.standard_normal((6, 40))
    y = (X[:, 0] > 0).astype(float)
    net = poswise.MLP((40, 3, 1), rng=0)

    def cb(epoch, hist):
        if epoch == 2:
            save_model(net, tmp_path / "ckpt.npz", metadata={"epoch": epoch})

    hist = poswise.GradientDescent(0.1, first_layer="dual").fit(net, X, y, epochs=2,
                                                                 callbacks=cb)
    assert hist.first_layer == "dual"
    loaded, meta, _ = read_model_file(tmp_path / "ckpt.npz")
    assert meta == {"epoch": 2}
    for a, b in zip(params(net), params(loaded)):
        assert a.tobytes() == b.tobytes()


# ------------------------------------------------------------------------ save errors
def test_save_rejects_bad_inputs(tmp_path, net):
    path = tmp_path / "m.npz"
    with pytest.raises(TypeError, match="net must be a poswise.MLP; got dict"):
        save_model({"weights": []}, path)
    with pytest.raises(TypeError, match="metadata must be a dict .* got list"):
        save_model(net, path, metadata=[1, 2])
    with pytest.raises(ValueError, match="metadata must be JSON-serialisable.*NaN"):
        save_model(net, path, metadata={"loss": float("nan")})
    with pytest.raises(ValueError, match="metadata must be JSON-serialisable.*set"):
        save_model(net, path, metadata={"s": {1, 2}})
    with pytest.raises(TypeError, match=r"metadata\['a'\] keys must be strings; got 1"):
        save_model(net, path, metadata={"a": {1: "x"}})
    circular = {}
    circular["self"] = circular
    with pytest.raises(ValueError, match="metadata must be JSON-serialisable.*[Cc]ircular"):
        save_model(net, path, metadata=circular)
    with pytest.raises(TypeError, match="arrays must be a dict"):
        save_model(net, path, arrays=[np.zeros(2)])
    with pytest.raises(TypeError, match=r"arrays\['o'\] must hold numbers.*object.*pickle"):
        save_model(net, path, arrays={"o": np.array([{}, 1], dtype=object)})
    with pytest.raises(TypeError, match=r"arrays\['s'\] must hold numbers.*<U"):
        save_model(net, path, arrays={"s": np.array(["a"])})
    for name in ("", "../x", "a/b", ".hidden", "x" * 101, 3):
        with pytest.raises(ValueError, match="arrays names must be"):
            save_model(net, path, arrays={name: np.zeros(1)})
    with pytest.raises(ValueError, match=r"arrays\['r'\] could not be converted"):
        save_model(net, path, arrays={"r": [[1, 2], [3]]})
    bad = net.copy()
    bad.weights[1][0, 0] = np.inf
    with pytest.raises(ValueError, match=r"weights\[1\] or biases\[1\] contain NaN or inf"):
        save_model(bad, path)
    for field, value in (("activation", "swish"), ("output", None), ("init", "zeros")):
        odd = net.copy()
        setattr(odd, field, value)
        with pytest.raises(ValueError, match=f"The network's {field} {value!r} is not one of"):
            save_model(odd, path)
    odd = net.copy()
    odd.leak = float("nan")
    with pytest.raises(ValueError, match="The network's leak must be a finite float >= 0"):
        save_model(odd, path)
    broken = net.copy()
    list.__setitem__(broken.biases, 0, np.zeros(7))     # past the list's own check
    with pytest.raises(ValueError, match="do not chain at layer 0"):
        save_model(broken, path)
    assert os.listdir(tmp_path) == []          # nothing written by a refused call


def test_save_into_missing_directory(tmp_path, net):
    with pytest.raises(FileNotFoundError):
        save_model(net, tmp_path / "nope" / "m.npz")
    assert os.listdir(tmp_path) == []


# ------------------------------------------------------------------------ atomic writes
def _fail_mid_write(monkeypatch, exc):
    """Make numpy's array writer write two members, then half of the third, then fail."""
    real = np.lib.format.write_array
    calls = []

    def flaky(fp, array, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            fp.write(b"\x93NUMPY partial data")
            raise exc
        return real(fp, array, *args, **kwargs)

    monkeypatch.setattr(np.lib.format, "write_array", flaky)
    return calls


@pytest.mark.parametrize("exc", [OSError(28, "No space left on device"), KeyboardInterrupt(),
                                 MemoryError()])
def test_failure_mid_write_keeps_old_file(monkeypatch, saved, net, exc):
    before = saved.read_bytes()
    calls = _fail_mid_write(monkeypatch, exc)
    with pytest.raises(type(exc)):
        save_model(poswise.MLP((2, 3, 1), rng=9), saved)
    assert len(calls) == 3                     # the failure really happened mid-file
    monkeypatch.undo()
    assert saved.read_bytes() == before
    assert_same_net(net, load_model(saved))
    assert os.listdir(saved.parent) == ["model.npz"]   # no temporary file left


def test_failure_mid_write_of_new_file_leaves_nothing(monkeypatch, tmp_path, net):
    _fail_mid_write(monkeypatch, OSError(28, "No space left on device"))
    with pytest.raises(OSError, match="No space"):
        save_model(net, tmp_path / "new.npz")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("stage", ["fsync", "replace"])
def test_failure_at_commit_keeps_old_file(monkeypatch, saved, net, stage):
    before = saved.read_bytes()

    def boom(*args, **kwargs):
        raise OSError(5, f"simulated {stage} failure")

    monkeypatch.setattr(io.os, stage, boom)
    with pytest.raises(OSError, match=f"simulated {stage} failure"):
        save_model(poswise.MLP((2, 1), rng=9), saved)
    monkeypatch.undo()
    assert saved.read_bytes() == before
    assert os.listdir(saved.parent) == ["model.npz"]


def test_data_is_fsynced_before_the_rename(monkeypatch, tmp_path, net):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(io.os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd)))
    monkeypatch.setattr(io.os, "replace",
                        lambda a, b: (events.append("replace"), real_replace(a, b)))
    save_model(net, tmp_path / "m.npz")
    assert events[:2] == ["fsync", "replace"]


# ------------------------------------------------------------------------ damaged files
def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        load_model(tmp_path / "nope.npz")


def test_directory_is_not_a_model(tmp_path):
    with pytest.raises(OSError):
        load_model(tmp_path)


@pytest.mark.parametrize("content, what", [
    (b"", "an empty file"),
    (b"hello, I am a text file\n", "not a zip archive"),
    (pickle.dumps({"weights": [1]}, protocol=4), "a pickle"),
])
def test_non_npz_files(tmp_path, content, what):
    path = tmp_path / "m.npz"
    path.write_bytes(content)
    with pytest.raises(ModelFileError, match=rf"m\.npz.*not a \.npz model file \({what}\)"):
        load_model(path)


def test_npy_file_is_not_a_model(tmp_path):
    path = tmp_path / "w.npy"
    np.save(path, np.zeros(3))
    with pytest.raises(ModelFileError, match=r"w\.npy.*a single \.npy array"):
        load_model(path)


def test_other_npz_is_not_a_model(tmp_path):
    path = tmp_path / "data.npz"
    np.savez(path, X=np.zeros((2, 2)))
    with pytest.raises(ModelFileError, match=r"data\.npz.*no 'metadata' array"):
        load_model(path)
    zipfile.ZipFile(tmp_path / "empty.npz", "w").close()
    with pytest.raises(ModelFileError, match="no 'metadata' array"):
        load_model(tmp_path / "empty.npz")


def test_error_type_and_attributes(saved):
    saved.write_bytes(b"junk")
    with pytest.raises(ModelFileError) as info:
        load_model(saved)
    err = info.value
    assert isinstance(err, ValueError)
    assert err.path == str(saved) and "not a .npz" in err.problem
    assert str(saved) in str(err)
    again = pickle.loads(pickle.dumps(err))
    assert str(again) == str(err) and again.path == err.path
    assert poswise.io.ModelFileError is ModelFileError


def test_truncated_files(saved):
    data = saved.read_bytes()
    cuts = sorted(set([1, 2, 3, 4, 10, 30, 100, len(data) // 2, len(data) - 22,
                       len(data) - 1] + list(range(0, len(data), 97))))
    for cut in cuts:
        saved.write_bytes(data[:cut])
        with pytest.raises(ModelFileError, match="model.npz"):
            load_model(saved)


def _member_spans(data):
    """(start, end) of every member's stored bytes in a zip held in ``data``."""
    spans = []
    with zipfile.ZipFile(BytesIO(data)) as zf:
        for info in zf.infolist():
            name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26:
                                                             info.header_offset + 30])
            start = info.header_offset + 30 + name_len + extra_len
            spans.append((start, start + info.compress_size))
    return spans


def test_every_single_byte_flip_is_caught_or_harmless(tmp_path):
    """Flip each byte in turn: the load either fails with ModelFileError or gives back the
    very same network. Nothing else: no other exception, no silently different network.
    Flips inside the stored arrays (metadata included) are always caught; the harmless
    ones are zip bookkeeping that no reader uses (timestamps, version fields, ...)."""
    net = poswise.MLP((3, 2, 1), rng=0)
    path = tmp_path / "m.npz"
    save_model(net, path, metadata={"k": 1}, arrays={"a": np.arange(3.0)})
    data = path.read_bytes()
    spans = _member_spans(data)
    assert len(spans) == 6 and len(data) < 4000
    harmless = []
    with open(path, "r+b") as fh:            # patch in place: rewriting is slow on some fs
        for pos in range(len(data)):
            fh.seek(pos)
            fh.write(bytes([data[pos] ^ 0x5A]))
            fh.flush()
            try:
                loaded, meta, arrays = read_model_file(path)
            except ModelFileError:
                pass
            else:
                assert_same_net(net, loaded)
                assert meta == {"k": 1} and np.array_equal(arrays["a"], np.arange(3.0))
                harmless.append(pos)
            fh.seek(pos)
            fh.write(data[pos:pos + 1])
    assert path.read_bytes() == data
    for start, end in spans:
        assert not [p for p in harmless if start <= p < end]


def test_tampered_weights_fail_integrity_check(saved):
    arrays = npz_contents(saved)
    arrays["weights_1"] = arrays["weights_1"].copy()
    arrays["weights_1"][0, 0] = np.nextafter(arrays["weights_1"][0, 0], 1)   # one ulp
    write_npz(saved, arrays)
    with pytest.raises(ModelFileError, match="integrity check failed"):
        load_model(saved)


def test_tampered_settings_fail_integrity_check(saved):
    arrays = npz_contents(saved)
    meta = metadata_of(arrays)
    meta["activation"] = "relu"
    write_npz(saved, with_metadata(arrays, meta, reseal=False))
    with pytest.raises(ModelFileError, match="integrity check failed"):
        load_model(saved)


def test_tampered_extra_array_fails_integrity_check(tmp_path, net):
    path = tmp_path / "c.npz"
    save_model(net, path, arrays={"C": np.zeros(3)})
    arrays = npz_contents(path)
    arrays["extra/C"] = np.ones(3)
    write_npz(path, arrays)
    with pytest.raises(ModelFileError, match="integrity check failed"):
        read_model_file(path)


def test_reencoded_file_still_loads(saved, net):
    """Compression, Fortran order and byte order are encodings, not content."""
    arrays = npz_contents(saved)
    arrays["weights_0"] = np.asfortranarray(arrays["weights_0"]).astype(">f8")
    write_npz(saved, arrays, compressed=True)
    loaded = load_model(saved)
    assert_same_net(net, loaded)
    assert loaded.weights[0].dtype == np.float64 and loaded.weights[0].dtype.isnative


@pytest.mark.parametrize("change, match", [
    (lambda m, a: m.update(format="other-format"), "format is 'other-format'"),
    (lambda m, a: m.update(format_version=2), r"format_version 2 is newer.*Upgrade"),
    (lambda m, a: m.update(format_version="1"), "invalid format_version '1'"),
    (lambda m, a: m.update(format_version=True), "invalid format_version True"),
    (lambda m, a: m.pop("sizes"), "'sizes' must be a list.*<missing>"),
    (lambda m, a: m.update(sizes=[4, 5, 3, 3]), r"'weights_2' .*shape \(2, 3\).*\(3, 3\)"),
    (lambda m, a: m.update(sizes=[4, 5, 3]), r"unexpected arrays \['biases_2', 'weights_2'\]"),
    (lambda m, a: m.update(sizes=[4, 5, 3, 2, 2]), r"missing arrays \['biases_3', 'weights_3'\]"),
    (lambda m, a: m.update(dtype="float32"), "dtype float64 .* says float32"),
    (lambda m, a: m.update(dtype="int64"), "'dtype' must be 'float32' or 'float64'"),
    (lambda m, a: m.update(activation="swish"), "'activation' must be one of"),
    (lambda m, a: m.update(output=None), "'output' must be one of"),
    (lambda m, a: m.update(init="zeros"), "'init' must be null or one of"),
    (lambda m, a: m.update(leak=-1), "'leak' must be a finite number >= 0"),
    (lambda m, a: m.update(extra_arrays=["C"]), r"missing arrays \['extra/C'\]"),
    (lambda m, a: m.update(user=[]), "'user' must be a JSON object"),
    (lambda m, a: a.pop("biases_1"), r"missing arrays \['biases_1'\]"),
    (lambda m, a: a.update(weights_0=a["weights_0"].astype(np.float32)),
     "'weights_0' has dtype float32"),
    (lambda m, a: a.update(weights_0=a["weights_0"].astype(np.int64)),
     "'weights_0' has dtype int64"),
    (lambda m, a: a.update(weights_0=a["weights_0"][:, :3]), r"'weights_0' .*shape \(5, 3\)"),
    (lambda m, a: a.update(biases_2=a["biases_2"][None]), r"'biases_2' .*shape \(1, 2\)"),
    (lambda m, a: a.update(stray=np.zeros(1)), r"unexpected arrays \['stray'\]"),
    (lambda m, a: a["weights_1"].__setitem__((0, 0), np.nan), "weights_1 or biases_1 contain NaN"),
    (lambda m, a: a["biases_0"].__setitem__(0, -np.inf), "weights_0 or biases_0 contain NaN"),
])
def test_inconsistent_files(saved, change, match):
    """Files that pass the integrity check (resealed) but do not describe a network."""
    arrays = {k: v.copy() for k, v in npz_contents(saved).items()}
    meta = metadata_of(arrays)
    change(meta, arrays)
    write_npz(saved, with_metadata(arrays, meta))
    with pytest.raises(ModelFileError, match=match):
        load_model(saved)


def test_bad_metadata_encoding(saved):
    arrays = npz_contents(saved)
    for raw, match in [(b"{not json", "not valid UTF-8 JSON"),
                       (b"\xff\xfe", "not valid UTF-8 JSON"),
                       (b"[1, 2]", "not a JSON object"),
                       (b"{}", "format is None")]:
        arrays["metadata"] = np.frombuffer(raw, dtype=np.uint8)
        write_npz(saved, arrays)
        with pytest.raises(ModelFileError, match=match):
            load_model(saved)
    arrays["metadata"] = np.zeros((2, 2), np.uint8)
    write_npz(saved, arrays)
    with pytest.raises(ModelFileError, match="'metadata' must be a 1-D uint8 array"):
        load_model(saved)


def test_object_arrays_are_refused_without_unpickling(saved, monkeypatch):
    arrays = dict(npz_contents(saved))
    arrays["weights_0"] = np.array([{"x": 1}, None], dtype=object)
    np.savez(saved, **arrays)                  # (allow_pickle=True: a hostile writer)
    unpickled = []
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: unpickled.append(1))
    monkeypatch.setattr(pickle, "load", lambda *a, **k: unpickled.append(1))
    with pytest.raises(ModelFileError,
                       match=r"model\.npz.*'weights_0' holds Python objects.*pickle"):
        load_model(saved)
    assert unpickled == []


def test_oversized_header_shape_is_refused(saved):
    """A member whose header promises more data than it holds is refused before any
    allocation of that size."""
    arrays = npz_contents(saved)
    hdr = np.lib.format.header_data_from_array_1_0(arrays["biases_0"])
    hdr["shape"] = (10**12,)
    with zipfile.ZipFile(saved, "a") as zf:
        with zf.open("huge.npy", "w") as f:
            np.lib.format.write_array_header_1_0(f, hdr)
            f.write(b"\0" * 16)
    with pytest.raises(ModelFileError, match="'huge' declares shape"):
        load_model(saved)


# ------------------------------------------------------- family 8 and one-way imports
def test_save_to_a_legal_240_character_name(tmp_path, net, monkeypatch):
    name = "m" * 236 + ".npz"
    assert len(name) == 240
    temps = []
    real_replace = os.replace
    monkeypatch.setattr(io.os, "replace", lambda a, b: (temps.append(a), real_replace(a, b)))
    net.save(tmp_path / name)
    assert_same_net(net, load_model(tmp_path / name))
    assert len(os.path.basename(temps[0])) <= 255
    assert os.listdir(tmp_path) == [name]
    # the longest legal name too
    longest = "n" * (os.pathconf(tmp_path, "PC_NAME_MAX") - 4) + ".npz"
    save_model(net, tmp_path / longest)
    assert_same_net(net, load_model(tmp_path / longest))


def _dead_pid():
    import subprocess
    import sys
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_a_killed_saves_temporary_is_removed_by_the_next_save(tmp_path, net):
    """A save killed mid-write (SIGKILL: no cleanup runs) leaves its temporary; the next
    save of that file removes it."""
    import subprocess
    import sys
    path = tmp_path / "model.npz"
    code = (
        "import os, signal, numpy as np, poswise\n"
        "def die(*a, **k): os.kill(os.getpid(), signal.SIGKILL)\n"
        "np.lib.format.write_array = die\n"
        f"poswise.MLP((4, 5, 2), rng=0).save({str(path)!r})\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [os.path.dirname(os.path.dirname(poswise.__file__))]
        + os.environ.get("PYTHONPATH", "").split(os.pathsep)))
    proc = subprocess.run([sys.executable, "-c", code], env=env, timeout=60)
    assert proc.returncode == -9
    left = os.listdir(tmp_path)
    assert len(left) == 1 and left[0].startswith(".model.npz.") and left[0].endswith(".tmp")
    save_model(net, path)
    assert sorted(os.listdir(tmp_path)) == ["model.npz"]
    assert_same_net(net, load_model(path))


def test_temporaries_of_live_writers_are_left_alone(tmp_path, net):
    path = tmp_path / "model.npz"
    live = tmp_path / f".model.npz.{os.getpid()}-{'a' * 12}.tmp"      # a concurrent save
    dead = tmp_path / f".model.npz.{_dead_pid()}-{'b' * 12}.tmp"      # a killed one
    other = tmp_path / f".other.npz.{_dead_pid()}-{'c' * 12}.tmp"     # another file's
    for p in (live, dead, other):
        p.write_bytes(b"partial")
    save_model(net, path)
    assert live.exists() and other.exists() and not dead.exists()


def test_nan_in_user_metadata_is_a_named_error(saved):
    arrays = npz_contents(saved)
    meta = metadata_of(arrays)
    for token in ("NaN", "Infinity", "-Infinity"):
        text = json.dumps(meta).replace('"user": {}', f'"user": {{"loss": {token}}}')
        assert token in text
        arrays["metadata"] = np.frombuffer(text.encode(), dtype=np.uint8)
        write_npz(saved, arrays)
        with pytest.raises(ModelFileError, match=f"model.npz.*{token}.*not valid JSON"):
            load_model(saved)


def test_predict_proba_validates_s(net):
    X = X_for(net)
    cos = poswise.MLP((4, 3), output="cosine", rng=0)
    for bad in (0, -1.0, float("nan"), float("inf"), "30", True, None):
        with pytest.raises(ValueError, match=r"'s' parameter of MLP.predict_proba must be "
                                             r"a finite float > 0"):
            cos.predict_proba(X, s=bad)
    p = cos.predict_proba(X, s=np.float32(10))
    z = cos.decision_function(X) * 10
    e = np.exp(z - z.max(axis=1, keepdims=True))
    np.testing.assert_allclose(p, e / e.sum(axis=1, keepdims=True), rtol=1e-12)


def test_config_round_trip_and_validation(net):
    cfg = net.get_config()
    assert set(cfg) == set(poswise.network.CONFIG_FIELDS)
    json.dumps(cfg)                                    # plain JSON types
    again = poswise.MLP.from_config(cfg, net.weights, net.biases)
    assert_same_net(net, again)
    for field, value in (("sizes", [4]), ("activation", "swish"), ("leak", -1),
                         ("dtype", "float16"), ("output", 3), ("init", "zeros")):
        with pytest.raises(ValueError, match=f"config field '{field}' must be"):
            poswise.MLP.from_config(dict(cfg, **{field: value}), net.weights, net.biases)
    with pytest.raises(ValueError, match="do not match config sizes"):
        poswise.MLP.from_config(dict(cfg, sizes=[4, 6, 3, 2]), net.weights, net.biases)
    f32 = poswise.MLP.from_config(dict(cfg, dtype="float32"), net.weights, net.biases)
    assert f32.dtype is np.float32


def _imports(module_file):
    import ast
    tree = ast.parse(open(module_file).read())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            names.add("." * node.level + (node.module or ""))
            names.update("." * node.level + a.name for a in node.names
                         if node.module is None)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def test_io_imports_network_and_never_the_reverse():
    net_imports = _imports(poswise.network.__file__)
    assert not any(n.endswith("io") and n.startswith(".") or n == "poswise.io"
                   for n in net_imports), net_imports
    assert ".network" in _imports(io.__file__)
    # and saving through the network still works: io registered its writer
    assert poswise.MLP._writer is save_model
