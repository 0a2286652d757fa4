"""Nothing lost: atomic outputs, kill-and-resume, determinism, and torch.distributed."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from annsnn.conversion_options import ConversionOptions
from annsnn.zoo import embedded_checkpoint

ANNSNN = [sys.executable, "-m", "annsnn"]


def _env(tmp_path: Path) -> dict:
    env = dict(os.environ)
    env["ANNSNN_HOME"] = str(tmp_path / "home")
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture(scope="module")
def snn_file(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rel")
    target = tmp / "digits.snn.pt"
    subprocess.run(ANNSNN + ["convert", str(embedded_checkpoint()), "--calib-samples", "512", "--out", str(target)], check=True, capture_output=True, env=_env(tmp), timeout=300)
    return target


def _energy(snn_file, out, env, *extra):
    return ANNSNN + ["energy", str(snn_file), "--T", "5,60", "--batch-size", "8", "--samples", "96", "--encoding", "poisson", "--seed", "7", "--json", str(out), *extra]


def test_same_inputs_give_byte_identical_json(snn_file, tmp_path):
    env = _env(tmp_path)
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    subprocess.run(_energy(snn_file, a, env), check=True, capture_output=True, env=env, timeout=300)
    subprocess.run(_energy(snn_file, b, env), check=True, capture_output=True, env=env, timeout=300)
    assert a.read_bytes() == b.read_bytes()


def _long_energy(snn_file, out, env, *extra):
    """Long enough (45 batches, 200 steps) that a kill lands mid-run."""
    return ANNSNN + ["energy", str(snn_file), "--T", "5,200", "--batch-size", "8", "--encoding", "poisson", "--seed", "7", "--json", str(out), *extra]


def test_killed_run_resumes_to_the_uninterrupted_numbers(snn_file, tmp_path):
    env = _env(tmp_path)
    reference = tmp_path / "ref.json"
    subprocess.run(_long_energy(snn_file, reference, env), check=True, capture_output=True, env=env, timeout=300)
    out = tmp_path / "run.json"
    progress = out.with_name(out.name + ".progress.pt")
    proc = subprocess.Popen(_long_energy(snn_file, out, env), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not progress.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert progress.exists() and not out.exists(), "the run finished before it could be killed"
    done = subprocess.run(_long_energy(snn_file, out, env, "--resume"), capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "resuming" in done.stderr
    assert json.loads(out.read_text()) == json.loads(reference.read_text())
    assert not progress.exists()


@pytest.fixture(scope="module")
def small_snn_file(tmp_path_factory):
    """A digits SNN converted in-process (fast), for the interrupted-write tests."""
    import torch

    from annsnn.artifact import save_snn
    from annsnn.model_files import load_model
    from annsnn.pipeline import ann_to_snn

    torch.manual_seed(0)
    snn, _ = ann_to_snn(load_model(embedded_checkpoint()).module, [torch.rand(32, 1, 8, 8)], input_shape=(1, 8, 8), meta={"dataset": {"name": "digits"}}, options=ConversionOptions.plain())
    target = tmp_path_factory.mktemp("small") / "small.snn.pt"
    save_snn(snn, target)
    return target


def _half_then(exc: BaseException):
    """A serializer that writes the first half of the real bytes, then is interrupted."""
    import io

    import torch

    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        buffer = io.BytesIO()
        real_save(obj, buffer, *args, **kwargs)
        data = buffer.getvalue()
        if hasattr(f, "write"):  # an open file (save_snn writes through one)
            f.write(data[: len(data) // 2])
            f.flush()
        else:
            with open(f, "wb") as handle:
                handle.write(data[: len(data) // 2])
                handle.flush()
        raise exc

    return save


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt(), OSError(28, "No space left on device")], ids=["ctrl-c", "disk-full"])
def test_a_write_interrupted_halfway_leaves_the_old_file_and_no_temporary(small_snn_file, tmp_path, monkeypatch, interrupt):
    import torch

    from annsnn.artifact import load_snn, save_snn

    folder = tmp_path / "out"
    folder.mkdir()
    target = folder / "model.snn.pt"
    target.write_bytes(small_snn_file.read_bytes())
    original = target.read_bytes()
    snn = load_snn(target)
    monkeypatch.setattr(torch, "save", _half_then(interrupt))
    with pytest.raises(type(interrupt)):
        save_snn(snn, target)
    assert target.read_bytes() == original
    assert sorted(p.name for p in folder.iterdir()) == ["model.snn.pt"]  # no temporary left


def test_a_json_write_interrupted_halfway_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    from annsnn.files import write_json

    target = tmp_path / "r.json"
    write_json(target, {"old": 1})
    original = target.read_bytes()
    real = Path.write_text

    def half(self, text, *args, **kwargs):
        real(self, text[: len(text) // 2], *args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(Path, "write_text", half)
    with pytest.raises(KeyboardInterrupt):
        write_json(target, {"new": list(range(100))})
    assert target.read_bytes() == original
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


_BLOCKED_WRITER = """
import io, sys, time, torch
from pathlib import Path
from annsnn.artifact import load_snn, save_snn
source, target, ready = sys.argv[1:4]
snn = load_snn(source)
real_save = torch.save
def save(obj, f, *a, **k):
    buffer = io.BytesIO(); real_save(obj, buffer)
    data = buffer.getvalue()
    handle = f if hasattr(f, "write") else open(f, "wb")
    handle.write(data[: len(data) // 2]); handle.flush()
    Path(ready).touch()
    time.sleep(600)  # killed here, inside the write
torch.save = save
save_snn(snn, target)
"""


def test_a_process_killed_inside_the_write_leaves_the_old_file(small_snn_file, tmp_path):
    from annsnn.artifact import load_snn

    folder = tmp_path / "out"
    folder.mkdir()
    target = folder / "model.snn.pt"
    target.write_bytes(small_snn_file.read_bytes())
    original = target.read_bytes()
    ready = tmp_path / "ready"
    proc = subprocess.Popen([sys.executable, "-c", _BLOCKED_WRITER, str(small_snn_file), str(target), str(ready)], env=_env(tmp_path))
    deadline = time.time() + 120
    while not ready.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert ready.exists(), "the writer never reached the write"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert target.read_bytes() == original and load_snn(target) is not None
    # a SIGKILL leaves no chance to clean up: the half-written bytes are only in a hidden temporary
    leftovers = [p.name for p in folder.iterdir() if p.name != "model.snn.pt"]
    assert all(name.startswith(".model.snn.pt.") and name.endswith(".tmp") for name in leftovers), leftovers


def test_two_processes_with_gloo_equal_one_process(snn_file, tmp_path):
    env = _env(tmp_path)
    env["OMP_NUM_THREADS"] = "1"
    single, double = tmp_path / "one.json", tmp_path / "two.json"
    common = ["energy", str(snn_file), "--T", "4,16", "--batch-size", "16", "--samples", "100", "--json"]
    subprocess.run(ANNSNN + common + [str(single)], check=True, capture_output=True, env=env, timeout=300)
    launched = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "annsnn"] + common + [str(double)],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert launched.returncode == 0, launched.stderr[-2000:]
    one, two = json.loads(single.read_text()), json.loads(double.read_text())
    assert one["samples"] == two["samples"] == 100
    assert one == two


@given(num_batches=st.integers(0, 50), size=st.integers(1, 8))
def test_shards_cover_every_batch_once(num_batches, size):
    from annsnn.distributed import shard_batches

    shards = [shard_batches(num_batches, rank, size) for rank in range(size)]
    flat = sorted(index for shard in shards for index in shard)
    assert flat == list(range(num_batches))  # no padding, no duplicates, nothing missing
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_select_batches_loads_exactly_those_batches():
    import torch
    from torch.utils.data import TensorDataset

    from annsnn.data import make_loader, select_batches

    loader = make_loader(TensorDataset(torch.arange(10.0), torch.arange(10)), batch_size=3)
    full = [x.tolist() for x, _ in loader]
    chosen = [x.tolist() for x, _ in select_batches(loader, [3, 1])]
    assert chosen == [full[3], full[1]] == [[9.0], [3.0, 4.0, 5.0]]


@pytest.mark.parametrize("change", ["split", "snn file replaced", "chunk"])
def test_cli_resume_never_merges_two_different_runs(small_snn_file, tmp_path, monkeypatch, capsys, change):
    """A run killed after one batch, resumed with something that changes the numbers: the CLI
    starts afresh (one note) and gives exactly the numbers of a fresh run."""
    import json as _json

    import torch

    import annsnn.analyzer as analyzer_module
    from annsnn.artifact import save_snn
    from annsnn.cli.main import main
    from annsnn.model_files import load_model
    from annsnn.modes import parse_mode
    from annsnn.convert import ConversionOptions
    from annsnn.pipeline import ann_to_snn

    def cli(*args):
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = exc.code
        return code, capsys.readouterr().err

    snn_path = tmp_path / "m.snn.pt"
    snn_path.write_bytes(small_snn_file.read_bytes())
    out = tmp_path / "r.json"
    common = ["evaluate", str(snn_path), "--T", "2,3", "--samples", "24", "--batch-size", "8", "--json", str(out)]
    real_run = analyzer_module.Analyzer.run
    calls = []

    def run_then_die(self, *args, **kwargs):
        if calls:
            raise KeyboardInterrupt
        calls.append(1)
        return real_run(self, *args, **kwargs)

    monkeypatch.setattr(analyzer_module.Analyzer, "run", run_then_die)
    code, err = cli(*common)
    assert code == 130 and out.with_name(out.name + ".progress.pt").is_file(), err
    monkeypatch.setattr(analyzer_module.Analyzer, "run", real_run)
    extra = []
    if change == "split":
        extra = ["--split", "train"]
    elif change == "chunk":
        extra = ["--chunk", "1"]
    else:
        torch.manual_seed(1)
        other, _ = ann_to_snn(load_model(embedded_checkpoint()).module, [torch.rand(32, 1, 8, 8)], input_shape=(1, 8, 8), options=ConversionOptions.plain(mode=parse_mode("max")), meta={"dataset": {"name": "digits"}})
        save_snn(other, snn_path)
    code, err = cli(*common, *extra, "--resume")
    assert code == 0, err
    assert "resuming" not in err and "different run" in err
    resumed = _json.loads(out.read_text())
    fresh_out = tmp_path / "fresh.json"
    code, err = cli(*common[:-1], str(fresh_out), *extra)
    assert code == 0, err
    fresh = _json.loads(fresh_out.read_text())
    assert {k: v for k, v in resumed.items() if k != "snn"} == {k: v for k, v in fresh.items() if k != "snn"}


# ===========================================================================
# Issue 25: 32 bad inputs. Every case: one line on stderr starting "error:", the documented
# exit code (2), no traceback, no "internal error", no half-written or lost output.
# Crafted SNN files start from tests/data/digits_stepbias_v1.snn.pt, a small step-bias SNN
# written by annsnn's SNN format version 1 (main at ab5bfe9, tests/data/make_digits_v1_snn.py).
# This session runs as root, where chmod does not block writes: read-only and full
# filesystems are emulated by monkeypatching the OS-level write calls (see _read_only and
# _full_disk), full-disk writes really go to /dev/full.

import errno
import hashlib
import io

V1_SNN = Path(__file__).parent / "data" / "digits_stepbias_v1.snn.pt"


def _cli(capsys, *args):
    from annsnn.cli.main import main

    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


_FINISHED_BAR = __import__("re").compile(r"━ (\d+)/\1 ")


def _one_error_line(code, err, *, exit_code=2, contains=(), after_finished_bars=False):
    """``err`` is one line "error: ..." (with ``after_finished_bars``: after the final
    state of bars that completed, k/k, before the failure; never an unfinished one)."""
    lines = [line for line in err.splitlines() if line.strip()]
    if after_finished_bars:
        lines = [line for line in lines if not _FINISHED_BAR.search(line)]
    assert code == exit_code, (code, err)
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and "internal error" not in lines[0] and "Traceback" not in err, lines[0]
    for word in contains:
        assert word.lower() in lines[0].lower(), (word, lines[0])
    return lines[0]


def _crafted(tmp_path, edit, name="crafted.snn.pt") -> Path:
    """V1_SNN with its JSON parts (meta, snn_graph, ann_graph) or tensors edited by ``edit``."""
    import torch

    payload = torch.load(str(V1_SNN), map_location="cpu", weights_only=True)
    parts = {key: json.loads(payload[key]) for key in ("meta", "snn_graph", "ann_graph")}
    edit(parts, payload["snn_state"], payload["ann_state"])
    for key, value in parts.items():
        payload[key] = json.dumps(value)
    target = tmp_path / name
    torch.save(payload, str(target))
    return target


def _neurons(parts):
    return [info["config"] for info in parts["snn_graph"]["modules"].values() if info["type"] == "IFNeurons"]


def test_a_v1_file_written_by_the_old_format_still_loads_and_evaluates(tmp_path, capsys):
    from annsnn.artifact import load_snn

    snn = load_snn(V1_SNN)
    assert tuple(snn.meta["input_shape"]) == (1, 8, 8) and snn.meta["calibrated_T"] == 4
    code, out, err = _cli(capsys, "evaluate", V1_SNN, "--T", "4", "--samples", "10")
    assert code == 0, err


# --- A. a crafted SNN file is refused, not run into garbage ------------------------------


@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_a_crafted_v_init_nan_or_inf_is_refused(tmp_path, capsys, value):
    def edit(parts, snn_state, ann_state):
        _neurons(parts)[0]["v_init"] = value

    code, _, err = _cli(capsys, "evaluate", _crafted(tmp_path, edit), "--T", "4", "--samples", "10")
    _one_error_line(code, err, contains=("v_init",))


def test_a_crafted_v_init_inf_is_refused_by_robustness(tmp_path, capsys):
    def edit(parts, snn_state, ann_state):
        _neurons(parts)[1]["v_init"] = float("inf")

    code, _, err = _cli(capsys, "robustness", _crafted(tmp_path, edit), "--T", "4", "--samples", "10", "--noise", "0.1")
    _one_error_line(code, err, contains=("v_init",))


def test_a_crafted_nan_weight_is_refused(tmp_path, capsys):
    def edit(parts, snn_state, ann_state):
        ann_state["model.classifier.3.weight"][0, 0] = float("nan")

    code, _, err = _cli(capsys, "evaluate", _crafted(tmp_path, edit), "--T", "4", "--samples", "10")
    _one_error_line(code, err, contains=("model.classifier.3.weight",))


def _set_meta(key, value):
    def edit(parts, snn_state, ann_state):
        parts["meta"][key] = value
    return edit


def _bias_steps_negative(parts, snn_state, ann_state):
    _neurons(parts)[0]["bias_steps"] = -10


def _step_bias_int32(parts, snn_state, ann_state):
    snn_state["model.features.2.step_bias"] = snn_state["model.features.2.step_bias"].round().to(__import__("torch").int32)


@pytest.mark.parametrize("edit,word", [(_set_meta("calibrated_T", -5), "calibrated_T"), (_bias_steps_negative, "bias_steps"), (_step_bias_int32, "step_bias")],
                         ids=["calibrated_T=-5", "bias_steps=-10", "int32 step_bias"])
def test_a_crafted_value_out_of_range_or_of_the_wrong_type_is_refused(tmp_path, capsys, edit, word):
    code, _, err = _cli(capsys, "evaluate", _crafted(tmp_path, edit), "--T", "4", "--samples", "10")
    _one_error_line(code, err, contains=(word,))


# --- B. bad input gives one line and exit 2, never "internal error" --------------------


def _state_edit(side, key, make):
    def edit(parts, snn_state, ann_state):
        state = snn_state if side == "snn" else ann_state
        state[key] = make(state[key])
    return edit


def _config_edit(path, **changes):
    def edit(parts, snn_state, ann_state):
        parts["snn_graph"]["modules"][path]["config"].update(changes)
    return edit


@pytest.mark.parametrize("edit", [
    _state_edit("snn", "model.classifier.1.weight", lambda t: t.round().to(__import__("torch").int64)),
    _config_edit("model.classifier.1", out_features=65),
    _state_edit("snn", "model.features.3.weight", lambda t: __import__("torch").zeros(32, 16, 5, 5)),
    _state_edit("snn", "model.features.0.weight", lambda t: t.reshape(-1)),
], ids=["int64 weight", "out_features 65 vs 64 rows", "weight of the wrong shape", "rank-1 conv weight"])
def test_b_spec_and_tensors_that_disagree_are_one_line(tmp_path, capsys, edit):
    code, _, err = _cli(capsys, "evaluate", _crafted(tmp_path, edit), "--T", "4", "--samples", "10")
    _one_error_line(code, err)


@pytest.mark.parametrize("edit", [
    _state_edit("snn", "model.features.0.weight", lambda t: t.double()),
    _state_edit("snn", "model.features.0.weight", lambda t: t.to(__import__("torch").complex64)),
    _state_edit("snn", "model.features.2.step_bias", lambda t: __import__("torch").zeros(4, 17, 1, 1)),
], ids=["float64 weight", "complex64 weight", "step bias with 17 channels on 16"])
def test_b_wrong_tensor_dtype_or_channels_is_one_line(tmp_path, capsys, edit):
    code, _, err = _cli(capsys, "evaluate", _crafted(tmp_path, edit), "--T", "4", "--samples", "10")
    _one_error_line(code, err)


@pytest.mark.parametrize("edit", [_config_edit("model.classifier.1", in_features=10**6, out_features=10**6), _config_edit("model.features.3", in_channels=2**20, out_channels=2**20)],
                         ids=["Linear(1e6, 1e6)", "Conv2d(2^20, 2^20)"])
def test_b_absurd_layer_is_refused_before_it_is_built(tmp_path, capsys, monkeypatch, edit):
    import torch

    real_empty = torch.empty

    def guarded_empty(*size, **kwargs):  # nothing may allocate more than 1 GB here
        dims = size[0] if len(size) == 1 and isinstance(size[0], (tuple, list, torch.Size)) else size
        numel = 1
        for d in dims:
            numel *= int(d)
        if kwargs.get("device") != "meta" and str(kwargs.get("device", "")) != "meta" and numel * 4 > 2**30:
            raise AssertionError(f"allocated {numel * 4 / 2**40:.1f} TB")
        return real_empty(*size, **kwargs)

    monkeypatch.setattr(torch, "empty", guarded_empty)
    code, _, err = _cli(capsys, "evaluate", _crafted(tmp_path, edit), "--T", "4", "--samples", "10")
    _one_error_line(code, err)


def test_b_crafted_huge_input_shape_is_refused(tmp_path, capsys):
    code, _, err = _cli(capsys, "evaluate", _crafted(tmp_path, _set_meta("input_shape", [1, 100000, 100000])), "--T", "4", "--samples", "10")
    _one_error_line(code, err)


def test_b_info_with_a_huge_input_shape_is_refused(capsys):
    code, _, err = _cli(capsys, "info", "zoo:cifar_cnn_s", "--input-shape", "3,60000,60000")
    _one_error_line(code, err, contains=("60000",))


def test_b_convert_caps_T_like_evaluate(tmp_path, capsys):
    code, _, err = _cli(capsys, "convert", "--T", "100000000", "--out", tmp_path / "m.snn.pt")
    _one_error_line(code, err, contains=("100000",))
    assert not (tmp_path / "m.snn.pt").exists()


@pytest.mark.parametrize("edit", [_set_meta("calibrated_T", "abc"), lambda parts, s, a: parts.__setitem__("meta", [1, 2])], ids=["calibrated_T='abc'", "meta is a list"])
def test_b_bad_metadata_is_one_line(tmp_path, capsys, edit):
    code, _, err = _cli(capsys, "evaluate", _crafted(tmp_path, edit), "--T", "4", "--samples", "10")
    _one_error_line(code, err)


def _image_folder(root: Path, sizes: dict[str, tuple[int, int]], mode: str = "L") -> Path:
    from PIL import Image

    for rel, size in sizes.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new(mode, size, color=128).save(path)
    return root


def test_b_mixed_size_image_folder_names_the_first_odd_file(tmp_path, capsys):
    folder = _image_folder(tmp_path / "imgs", {"a/0.png": (32, 32), "a/1.png": (32, 32), "b/2.png": (33, 31), "b/3.png": (32, 32)}, mode="RGB")
    code, _, err = _cli(capsys, "convert", "zoo:cifar_cnn_s", "--calibration", "none", "--data", f"imagefolder:{folder}", "--batch-size", "4", "--out", tmp_path / "m.snn.pt")
    _one_error_line(code, err, contains=("2.png", "33×31"))


def test_b_malformed_energy_model_points_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"name": "bad", "e_mac_pj": 4.6, "e_ac_pj": 0.9, "e_neuron_pj": 1.0, "citation": "x", "memory": {"points": [[8192], [32768, 20.0]]}}))
    code, _, err = _cli(capsys, "energy", V1_SNN, "--T", "4", "--samples", "10", "--energy-model", bad)
    _one_error_line(code, err, contains=("bad.json", "points"))


@pytest.mark.parametrize("command", ["evaluate", "robustness"])
def test_b_unknown_device_is_one_line(capsys, command):
    extra = ["--noise", "0.1"] if command == "robustness" else []
    code, _, err = _cli(capsys, command, V1_SNN, "--T", "4", "--samples", "10", "--device", "nonsense", *extra)
    _one_error_line(code, err, contains=("nonsense",))


def _under(path, folder: Path) -> bool:
    try:
        return isinstance(path, (str, os.PathLike)) and Path(os.path.abspath(path)).is_relative_to(folder.resolve())
    except (TypeError, ValueError):
        return False


def _read_only(monkeypatch, folder: Path, code=errno.EROFS):
    """Emulate ``folder`` on a read-only filesystem (root ignores chmod): access(W_OK) is
    False, and creating, opening for writing or renaming anything under it fails with EROFS."""
    import builtins

    message = os.strerror(code)
    real_access, real_mkdir, real_open, real_os_open, real_replace = os.access, os.mkdir, builtins.open, os.open, os.replace

    def access(path, mode, *a, **k):
        if mode & os.W_OK and _under(path, folder):
            return False
        return real_access(path, mode, *a, **k)

    def mkdir(path, *a, **k):
        if _under(path, folder):
            raise OSError(code, message, str(path))
        return real_mkdir(path, *a, **k)

    def open_(file, mode="r", *a, **k):
        if any(c in mode for c in "wax+") and _under(file, folder):
            raise OSError(code, message, str(file))
        return real_open(file, mode, *a, **k)

    def os_open(path, flags, *a, **k):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and _under(path, folder):
            raise OSError(code, message, str(path))
        return real_os_open(path, flags, *a, **k)

    def replace(src, dst, *a, **k):
        if _under(dst, folder):
            raise OSError(code, message, str(dst))
        return real_replace(src, dst, *a, **k)

    monkeypatch.setattr(os, "access", access)
    monkeypatch.setattr(os, "mkdir", mkdir)
    monkeypatch.setattr(builtins, "open", open_)
    monkeypatch.setattr(io, "open", open_)  # pathlib's write_text opens through io.open
    monkeypatch.setattr(os, "open", os_open)
    monkeypatch.setattr(os, "replace", replace)


def _full_disk(monkeypatch, folder: Path):
    """Emulate a full filesystem at ``folder``: every byte written to a file under it goes to
    /dev/full (ENOSPC, as a full disk gives), through torch.save, open() and os.open()."""
    import builtins

    import torch

    real_save, real_open, real_os_open = torch.save, builtins.open, os.open

    def save(obj, f, *a, **k):
        if _under(f, folder):
            return real_save(obj, "/dev/full", *a, **k)
        return real_save(obj, f, *a, **k)

    def open_(file, mode="r", *a, **k):
        if any(c in mode for c in "wax+") and _under(file, folder):
            real_open(file, mode, *a, **k).close()  # the file itself can be created
            return real_open("/dev/full", mode.replace("x", "w"), *a, **k)
        return real_open(file, mode, *a, **k)

    def os_open(path, flags, *a, **k):
        if flags & (os.O_WRONLY | os.O_RDWR) and _under(path, folder):
            real_os_close = real_os_open(path, flags, *a, **k)
            os.close(real_os_close)
            return real_os_open("/dev/full", os.O_WRONLY)
        return real_os_open(path, flags, *a, **k)

    monkeypatch.setattr(torch, "save", save)
    monkeypatch.setattr(builtins, "open", open_)
    monkeypatch.setattr(io, "open", open_)  # pathlib's write_text opens through io.open
    monkeypatch.setattr(os, "open", os_open)


def test_b_demo_into_a_read_only_folder_is_one_line(tmp_path, capsys, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    _read_only(monkeypatch, ro)
    code, _, err = _cli(capsys, "demo", "--out-dir", ro / "demo-out")
    _one_error_line(code, err, contains=("read-only",))


def test_b_convert_out_on_a_full_disk_is_one_line(tmp_path, capsys, monkeypatch):
    full = tmp_path / "full"
    full.mkdir()
    _full_disk(monkeypatch, full)
    code, _, err = _cli(capsys, "convert", "--calibration", "none", "--calib-samples", "64", "--out", full / "m.snn.pt")
    _one_error_line(code, err, contains=("m.snn.pt", "no space left"), after_finished_bars=True)
    assert list(full.iterdir()) == []


def test_b_convert_json_on_a_full_disk_is_one_line(tmp_path, capsys, monkeypatch):
    full = tmp_path / "full"
    full.mkdir()
    _full_disk(monkeypatch, full)
    code, _, err = _cli(capsys, "convert", "--calibration", "none", "--calib-samples", "64", "--out", tmp_path / "m.snn.pt", "--json", full / "m.json")
    _one_error_line(code, err, contains=("m.json", "no space left"), after_finished_bars=True)
    assert list(full.iterdir()) == [] and not (tmp_path / "m.snn.pt").exists()


# --- C. a failed run leaves no partial output and destroys no earlier output ------------


def test_c_energy_with_a_read_only_plot_folder_writes_nothing(tmp_path, capsys, monkeypatch):
    o = tmp_path / "o"
    o.mkdir()
    ro = tmp_path / "ro"
    ro.mkdir()
    _read_only(monkeypatch, ro)
    code, _, err = _cli(capsys, "energy", V1_SNN, "--T", "4", "--samples", "10", "--json", o / "e.json", "--csv", o / "e.csv", "--plot", ro / "plots")
    _one_error_line(code, err, contains=("plots",))
    assert list(o.iterdir()) == []


def test_c_robustness_with_a_read_only_plot_folder_writes_nothing(tmp_path, capsys, monkeypatch):
    o = tmp_path / "o"
    o.mkdir()
    ro = tmp_path / "ro"
    ro.mkdir()
    _read_only(monkeypatch, ro)
    code, _, err = _cli(capsys, "robustness", V1_SNN, "--T", "4", "--samples", "10", "--noise", "0.1", "--json", o / "r.json", "--plot", ro)
    _one_error_line(code, err)
    assert list(o.iterdir()) == []


def test_c_energy_csv_on_a_full_disk_leaves_no_json(tmp_path, capsys, monkeypatch):
    o = tmp_path / "o"
    o.mkdir()
    full = tmp_path / "full"
    full.mkdir()
    (o / "e.json").write_text('{"earlier": true}')
    _full_disk(monkeypatch, full)
    code, _, err = _cli(capsys, "energy", V1_SNN, "--T", "4", "--samples", "10", "--json", o / "e.json", "--csv", full / "e.csv")
    _one_error_line(code, err, contains=("e.csv", "no space left"), after_finished_bars=True)
    assert (o / "e.json").read_text() == '{"earlier": true}' and [p.name for p in o.iterdir()] == ["e.json"]


def test_c_convert_whose_json_fails_keeps_the_earlier_snn(tmp_path, capsys, monkeypatch):
    o = tmp_path / "o"
    o.mkdir()
    earlier = o / "m.snn.pt"
    earlier.write_bytes(V1_SNN.read_bytes())
    full = tmp_path / "full"
    full.mkdir()
    _full_disk(monkeypatch, full)
    code, _, err = _cli(capsys, "convert", "--calibration", "none", "--calib-samples", "64", "--out", earlier, "--json", full / "m.json")
    _one_error_line(code, err, contains=("m.json", "no space left"), after_finished_bars=True)
    assert earlier.read_bytes() == V1_SNN.read_bytes()


def test_c_two_converts_writing_the_same_pair_leave_a_consistent_pair(tmp_path, capsys):
    out, report = tmp_path / "m.snn.pt", tmp_path / "m.json"
    env = _env(tmp_path)
    env["OMP_NUM_THREADS"] = "1"
    runs = [subprocess.Popen(ANNSNN + ["convert", "--calibration", "none", "--calib-samples", "64", "--mode", mode, "--out", str(out), "--json", str(report)],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for mode in ("max", "99.9")]
    for run in runs:
        _, stderr = run.communicate(timeout=300)
        assert run.returncode == 0, stderr
    recorded = json.loads(report.read_text())
    assert recorded["snn"]["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()  # the pair on disk comes from one run
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".m.")) == []  # no temporaries left


# --- D. one line means one line: no progress-bar residue before the error ---------------


def _readout_delay_negative(parts, snn_state, ann_state):
    parts["meta"]["readout_delay"] = -1


def test_d_crafted_negative_readout_delay_is_one_line(tmp_path, capsys):
    code, _, err = _cli(capsys, "evaluate", _crafted(tmp_path, _readout_delay_negative), "--T", "4", "--samples", "10")
    _one_error_line(code, err, contains=("readout_delay",))


def test_d_corrupt_jpeg_is_one_line(tmp_path, capsys):
    folder = _image_folder(tmp_path / "imgs", {"a/0.png": (32, 32), "a/1.png": (32, 32), "b/3.png": (32, 32)}, mode="RGB")
    (folder / "b" / "2.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    code, _, err = _cli(capsys, "convert", "zoo:cifar_cnn_s", "--calibration", "none", "--data", f"imagefolder:{folder}", "--batch-size", "2", "--out", tmp_path / "m.snn.pt")
    _one_error_line(code, err, contains=("2.jpg",))


@pytest.mark.parametrize("command", ["evaluate", "robustness"])
def test_d_wrong_data_shape_is_one_line(tmp_path, capsys, command):
    folder = _image_folder(tmp_path / "imgs", {"a/0.png": (8, 8), "b/1.png": (8, 8)}, mode="RGB")  # 3×8×8 against 1×8×8
    extra = ["--noise", "0.1"] if command == "robustness" else []
    code, _, err = _cli(capsys, command, V1_SNN, "--T", "4", "--data", f"imagefolder:{folder}", *extra)
    _one_error_line(code, err, contains=("(3, 8, 8)",))


# --- E. messages that say what happened ------------------------------------------------


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ.get('ANNSNN_EVIL_MARKER', '/nonexistent/x')}",))


@pytest.mark.parametrize("trust", [False, True], ids=["untrusted", "--trust"])
def test_e_a_pickle_that_calls_os_system_is_refused_as_unsafe(tmp_path, capsys, monkeypatch, trust):
    import pickle

    marker = tmp_path / "ran"
    monkeypatch.setenv("ANNSNN_EVIL_MARKER", str(marker))
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps(_Evil(), protocol=2))
    code, _, err = _cli(capsys, "info", evil, "--input-shape", "1,8,8", *(["--trust"] if trust else []))
    _one_error_line(code, err, contains=("unsafe",))
    assert "corrupt" not in err and not marker.exists()


@pytest.mark.parametrize("command", ["info", "energy --model"])
def test_e_a_nir_file_named_pt_is_named_by_its_content(tmp_path, capsys, command):
    import h5py

    fake = tmp_path / "net.pt"
    with h5py.File(fake, "w") as handle:
        handle.create_group("node")
    args = ["info", fake] if command == "info" else ["energy", "--model", fake, "--data", "digits", "--T", "4", "--samples", "10"]
    code, _, err = _cli(capsys, *args)
    line = _one_error_line(code, err, contains=("NIR",))
    assert "--trust" not in line


@pytest.mark.parametrize("code", [errno.EDQUOT, errno.ENOSPC, errno.EACCES], ids=["quota", "disk full", "permission"])
def test_c_an_output_set_writes_all_or_nothing(tmp_path, code):
    """The library's OutputSet: the second output fails while being written; the first
    target keeps its old bytes, nothing new appears, no temporary is left."""
    from annsnn.errors import OutputError
    from annsnn.outputs import OutputSet

    first, second = tmp_path / "a.json", tmp_path / "b.csv"
    first.write_text("old")
    outputs = OutputSet()
    outputs.file(first)
    outputs.file(second)
    outputs.text(first, "new")

    def failing(handle):
        handle.write(b"half")
        raise OSError(code, os.strerror(code))

    outputs.write(second, failing)
    with pytest.raises(OutputError) as caught:
        outputs.commit()
    assert str(caught.value) == f"cannot write {str(second)!r}: {os.strerror(code)}"
    assert first.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_c_a_folder_where_a_plot_goes_replaces_no_earlier_output(tmp_path):
    """'energy --json e.json --plot pp' with a folder at pp/pareto.png: the JSON was replaced
    before the plots' rename failed. Every destination is checked before the first rename."""
    from annsnn.errors import OutputError
    from annsnn.outputs import OutputSet

    first, plots = tmp_path / "e.json", tmp_path / "pp"
    first.write_text("old")
    (plots / "pareto.png").mkdir(parents=True)
    (plots / "accuracy.png").write_text("old plot")
    outputs = OutputSet()
    outputs.file(first)
    outputs.folder(plots)
    outputs.text(first, "new")
    outputs.files_in(plots, lambda folder: [(folder / name).write_text("new") for name in ("accuracy.png", "pareto.png")])
    with pytest.raises(OutputError, match="pareto.png.*it is a folder"):
        outputs.commit()
    assert first.read_text() == "old" and (plots / "accuracy.png").read_text() == "old plot"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.json", "pp"] and sorted(p.name for p in plots.iterdir()) == ["accuracy.png", "pareto.png"]


def test_c_a_rename_that_fails_puts_back_the_earlier_ones(tmp_path, monkeypatch):
    """The third of three renames fails (EXDEV, say): the first two targets get their old
    bytes back, the new file that had no predecessor goes, no temporary is left."""
    from annsnn.errors import OutputError
    from annsnn.outputs import OutputSet

    paths = [tmp_path / name for name in ("a.json", "b.csv", "c.md")]
    paths[0].write_text("old a")
    outputs = OutputSet()
    for path in paths:
        outputs.file(path)
        outputs.text(path, "new")
    real = os.replace
    calls = []

    def replace(src, dst):
        calls.append(dst)
        if str(dst) == str(paths[2]):
            raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))
        return real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OutputError, match="c.md"):
        outputs.commit()
    monkeypatch.setattr(os, "replace", real)
    assert paths[0].read_text() == "old a" and not paths[1].exists() and not paths[2].exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES, errno.EDQUOT], ids=["read-only", "permission", "quota"])
def test_c_an_unwritable_output_is_refused_before_the_work(tmp_path, capsys, monkeypatch, code):
    ro = tmp_path / "ro"
    ro.mkdir()
    _read_only(monkeypatch, ro, code)
    code_, _, err = _cli(capsys, "evaluate", V1_SNN, "--T", "4", "--samples", "10", "--json", ro / "e.json")
    _one_error_line(code_, err, contains=("e.json", os.strerror(code)))


@pytest.mark.parametrize("command", [["evaluate", "--json"], ["energy", "--markdown"], ["robustness", "--noise", "0.1", "--csv"]], ids=["evaluate", "energy", "robustness"])
def test_an_output_never_overwrites_the_last_conversion_it_reads(tmp_path, capsys, monkeypatch, command):
    """With no SNN given, a command reads this folder's last conversion; '--json last.snn.pt'
    wrote the report over that SNN (exit 0) because only an SNN given by name was an input."""
    monkeypatch.chdir(tmp_path)
    code, _, err = _cli(capsys, "convert", "--calibration", "none", "--calib-samples", "64", "--out", "last.snn.pt")
    assert code == 0, err
    before = (tmp_path / "last.snn.pt").read_bytes()
    code, _, err = _cli(capsys, *command[:-1], "--T", "2", "--samples", "5", command[-1], "last.snn.pt")
    _one_error_line(code, err, contains=("refusing to overwrite the input file",))
    assert (tmp_path / "last.snn.pt").read_bytes() == before


def test_a_state_folder_that_is_a_file_is_refused_before_the_conversion(tmp_path, capsys, monkeypatch):
    """ANNSNN_HOME naming a file: the SNN was written, then a traceback (NotADirectoryError,
    exit 1) where the last conversion is remembered."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "homefile").write_text("x")
    monkeypatch.setenv("ANNSNN_HOME", str(tmp_path / "homefile"))
    code, _, err = _cli(capsys, "convert", "--calibration", "none", "--calib-samples", "64", "--out", "h.snn.pt")
    _one_error_line(code, err, contains=("homefile", "is a file, not a folder"))
    assert not (tmp_path / "h.snn.pt").exists()


@pytest.mark.parametrize("home", ["/proc/annsnn-test-home", "/sys/annsnn-test-home"])
def test_a_state_folder_that_cannot_be_created_is_refused_before_the_conversion(tmp_path, capsys, monkeypatch, home):
    """A state folder no one can create (here under /proc and /sys, refused even to root)
    was found only after the calibration: the SNN was written, then 'internal error
    (FileNotFoundError ...)' (exit 1) or 'cannot write' (exit 2)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ANNSNN_HOME", home)
    code, _, err = _cli(capsys, "convert", "--calibration", "none", "--calib-samples", "64", "--out", "h.snn.pt")
    _one_error_line(code, err, contains=("ANNSNN_HOME", home))
    assert not (tmp_path / "h.snn.pt").exists()

def test_an_unexpected_os_error_is_one_line_not_a_traceback(tmp_path, capsys, monkeypatch):
    """An OSError outside the machine conditions (disk full, read-only, ...) was re-raised:
    a traceback. It is one 'internal error' line, exit 1, as every other unexpected error."""
    import errno as errno_module

    import annsnn.workspace

    monkeypatch.chdir(tmp_path)

    def busy(*args, **kwargs):
        raise OSError(errno_module.EBUSY, os.strerror(errno_module.EBUSY), "somewhere")

    monkeypatch.setattr(annsnn.workspace, "remember_last_snn", busy)  # convert imports it from there when it runs
    code, _, err = _cli(capsys, "convert", "--calibration", "none", "--calib-samples", "64", "--out", "b.snn.pt")
    lines = [line for line in err.splitlines() if line.strip() and not _FINISHED_BAR.search(line)]
    assert code == 1 and lines == ["error: internal error (OSError: [Errno 16] Device or resource busy: 'somewhere'); rerun as 'annsnn --debug COMMAND ...' for the traceback"], err


def test_a_nir_graph_on_the_wrong_input_shape_prints_no_traceback(tmp_path, capsys, monkeypatch):
    """torch.fx's ShapeProp prints the failing node's traceback to stderr itself, before the
    one-line error: only the line remains."""
    monkeypatch.chdir(tmp_path)
    code, _, err = _cli(capsys, "convert", "--target", "nir", "--T", "4", "--calib-samples", "300", "--out", "n.snn.pt")
    assert code == 0, err
    code, _, err = _cli(capsys, "export", "n.snn.pt", "--nir", "n.nir")
    assert code == 0, err
    code, _, err = _cli(capsys, "import-nir", "n.nir", "--input-shape", "3,5,5")
    line = _one_error_line(code, err, contains=("does not run on input shape", "features_0", "expected input[1, 3, 5, 5] to have 1 channels"))
    assert "Traceback" not in err and "ShapeProp" not in line and "meta=" not in line  # torch.fx's wrapper, not the cause, was printed
    code, _, err = _cli(capsys, "export", "n.snn.pt", "--nir", "")  # '' was the folder '.': the rename onto it failed (EBUSY), a traceback
    _one_error_line(code, err, contains=("an empty path",))
    code, _, err = _cli(capsys, "export", "n.snn.pt", "--nir", "n.snn.pt")  # the message named --out, a flag export does not have
    _one_error_line(code, err, contains=("refusing to overwrite the input file", "choose another output path"))


@pytest.mark.parametrize("layout", ["flat", "split"])
def test_evaluate_says_when_its_images_are_the_calibration_images(tmp_path, capsys, monkeypatch, layout):
    """An image folder without train/ + test/ serves both: the accuracy evaluate printed was
    on the images convert calibrated on, with nothing to say so."""
    monkeypatch.chdir(tmp_path)
    files = {f"{cls}/{i}.png": (32, 32) for cls in ("a", "b") for i in range(3)}
    if layout == "split":
        files = {f"{split}/{name}": size for split in ("train", "test") for name, size in files.items()}
    folder = _image_folder(tmp_path / "imgs", files, mode="RGB")
    code, _, err = _cli(capsys, "convert", "zoo:cifar_cnn_s", "--calibration", "none", "--data", f"imagefolder:{folder}", "--batch-size", "2", "--out", "m.snn.pt")
    assert code == 0, err
    code, out, err = _cli(capsys, "evaluate", "m.snn.pt", "--T", "2")
    assert code == 0, err
    note = f"note: imagefolder:{folder} has no train/ and test/ (or val/) folders: convert calibrated on these same images, so the accuracy is not on held-out data"
    assert (note in " ".join(out.split())) == (layout == "flat"), out


# --- E. fourth review: energy models, read-only SNN folders, ignored flags, naming ------


def _energy_model_file(path: Path, **fields) -> Path:
    path.write_text(json.dumps({"e_ac_pj": 1.0, "e_neuron_pj": 1.0, "citation": "test", **fields}))
    return path


def test_e_a_custom_energy_model_named_like_a_preset_is_refused(tmp_path, capsys):
    """A file named '45nm-fp32' replaced the preset's row (results are keyed by name): the
    table printed the file's 36.86 µJ as '45nm-fp32', exit 0."""
    mine = _energy_model_file(tmp_path / "my.json", name="45nm-fp32", e_mac_pj=100.0)
    code, _, err = _cli(capsys, "energy", V1_SNN, "--T", "4", "--samples", "10", "--energy-model", "45nm-fp32", "--energy-model", mine)
    _one_error_line(code, err, contains=("45nm-fp32", "preset"))
    other = _energy_model_file(tmp_path / "other.json", name="chip", e_mac_pj=1.0)
    same = _energy_model_file(tmp_path / "same.json", name="chip", e_mac_pj=2.0)
    code, _, err = _cli(capsys, "energy", V1_SNN, "--T", "4", "--samples", "10", "--energy-model", other, "--energy-model", same)
    _one_error_line(code, err, contains=("'chip'", "twice"))


def test_e_two_energy_models_with_one_name_are_refused_by_the_library():
    from annsnn.analyzer import Analyzer
    from annsnn.artifact import load_snn
    from annsnn.energy import get_energy_model
    from annsnn.errors import UsageError

    model = get_energy_model("45nm-fp32")
    with pytest.raises(UsageError, match="twice"):
        Analyzer(load_snn(V1_SNN), [4], energy_models=[model, "45nm-fp32"])


@pytest.mark.parametrize("suffix", [".json", ".toml"])
def test_e_a_neuromorphic_energy_model_file_needs_no_mac_energy(tmp_path, suffix):
    """As documented ('leave e_mac_pj out'): leaving it out failed with a dataclass TypeError,
    and TOML, which has no null, could not describe a neuromorphic chip at all."""
    from annsnn.energy import get_energy_model

    path = tmp_path / f"chip{suffix}"
    if suffix == ".json":
        _energy_model_file(path, name="chip", kind="neuromorphic")
    else:
        path.write_text('name = "chip"\nkind = "neuromorphic"\ne_ac_pj = 2.5\ne_neuron_pj = 1.0\ncitation = "test"\n')
    model = get_energy_model(str(path))
    assert (model.name, model.kind, model.e_mac_pj) == ("chip", "neuromorphic", None)


@pytest.mark.parametrize("reference", ["nosuch", "loihi"])
def test_e_a_bad_ann_reference_is_refused_before_the_simulation(tmp_path, capsys, reference):
    """It was found after the whole simulation, which left its progress file behind."""
    chip = _energy_model_file(tmp_path / "chip.json", name="chip", kind="neuromorphic", ann_reference=reference)
    out = tmp_path / "k.json"
    code, _, err = _cli(capsys, "energy", V1_SNN, "--T", "4", "--samples", "10", "--energy-model", chip, "--json", out)
    _one_error_line(code, err, contains=("ann_reference", reference))
    assert "━" not in err and list(tmp_path.iterdir()) == [chip]


def test_e_evaluate_an_snn_in_a_read_only_folder_runs_without_a_progress_file(tmp_path, capsys, monkeypatch):
    """Without --json the progress file goes beside the SNN: in a read-only folder the run
    failed after its first batch. Now it runs (not resumable, and it says so); --resume,
    which needs the file, is refused before anything runs."""
    import shutil

    ro = tmp_path / "ro"
    ro.mkdir()
    shutil.copy(V1_SNN, ro / "d.snn.pt")
    _read_only(monkeypatch, ro)
    for command in ("evaluate", "energy"):
        code, out, err = _cli(capsys, command, ro / "d.snn.pt", "--T", "4", "--samples", "10")
        assert code == 0, err
        assert "cannot be resumed" in " ".join((out + err).split()), err
        code, _, err = _cli(capsys, command, ro / "d.snn.pt", "--T", "4", "--samples", "10", "--resume")
        _one_error_line(code, err, contains=("--resume", "read-only"))
        assert "━" not in err
    assert sorted(p.name for p in ro.iterdir()) == ["d.snn.pt"]


def test_e_the_energy_table_never_splits_a_number(tmp_path, capsys):
    """With 10 values of T the cells folded mid-number ('1.│69│ │µJ'): every energy and ratio
    is printed whole, and no line is wider than 80 columns."""
    from annsnn.cli.render import energy_str

    out_json = tmp_path / "e.json"
    steps = ",".join(str(t) for t in range(1, 11))
    code, out, err = _cli(capsys, "energy", V1_SNN, "--T", steps, "--samples", "10", "--json", out_json)
    assert code == 0, err
    assert max(len(line) for line in out.splitlines()) <= 80
    data = json.loads(out_json.read_text())
    cells = []
    for row in data["rows"]:
        for name, pj in row["energy_pj"].items():
            cells += [energy_str(pj), f"×{row['energy_ratio'][name]:.3f}"]
    missing = [c for c in cells if c not in out]
    assert not missing, (missing[:5], out)


@pytest.mark.parametrize("extra, word", [
    (("--dt", "0.5"), "--dt"),
    (("--arch", "resnet20"), "--arch"),
    (("--input-shape", "1,8,8"), "--input-shape"),
    (("--trust",), "--trust"),
])
def test_e_energy_refuses_flags_that_do_not_apply_to_an_snn_file(capsys, extra, word):
    code, _, err = _cli(capsys, "energy", V1_SNN, "--T", "4", "--samples", "10", *extra)
    _one_error_line(code, err, contains=(word,))


@pytest.mark.parametrize("extra, word", [
    (("--T", "4"), "--T"),
    (("--encoding", "poisson"), "--encoding"),
    (("--samples", "5"), "--samples"),
])
def test_e_energy_ann_refuses_the_simulation_flags(capsys, extra, word):
    code, _, err = _cli(capsys, "energy", "--ann", embedded_checkpoint(), *extra)
    _one_error_line(code, err, contains=(word,))


@pytest.mark.parametrize("extra, word", [
    (("--T", "3"), "--T"),
    (("--tau", "3"), "--tau"),
    (("--neurons", "5"), "--neurons"),
    (("--assign-samples", "5"), "--assign-samples"),
    (("--test-samples", "5"), "--test-samples"),
    (("--snn", "--neurons", "5"), "--neurons"),
])
def test_e_zoo_train_refuses_flags_of_another_kind_of_training(tmp_path, capsys, extra, word):
    code, _, err = _cli(capsys, "zoo", "train", "digits_cnn", "--epochs", "1", "--out", tmp_path / "x.pt", *extra)
    _one_error_line(code, err, contains=(word,))
    assert not (tmp_path / "x.pt").exists()


def test_e_zoo_train_an_unknown_arch_is_one_line_with_no_blank_line_before_it(tmp_path, capsys):
    code, _, err = _cli(capsys, "zoo", "train", "nosuch", "--out", tmp_path / "x.pt")
    _one_error_line(code, err, contains=("nosuch",))
    assert err.startswith("error: "), repr(err)


def test_e_info_of_an_unknown_zoo_name_does_not_name_a_flag_that_was_not_given(capsys):
    code, _, err = _cli(capsys, "info", "zoo:nosuch")
    line = _one_error_line(code, err, contains=("nosuch", "zoo list"))
    assert "--arch" not in line


def test_e_a_plain_pickle_is_one_line_without_torch_warnings(tmp_path):
    """torch.load printed a two-line UserWarning (pickle protocol 4) before the error; in a
    subprocess, as a user sees it (pytest would capture the warning)."""
    import pickle

    import torch

    path = tmp_path / "p.pt"
    with open(path, "wb") as handle:
        pickle.dump({"w": torch.zeros(2)}, handle, protocol=4)
    for args in (("info", path), ("convert", path, "--out", tmp_path / "m.snn.pt")):
        done = subprocess.run(ANNSNN + [str(a) for a in args], capture_output=True, text=True, env=_env(tmp_path), timeout=300)
        _one_error_line(done.returncode, done.stderr)
        assert "Warning" not in done.stderr, done.stderr


def test_e_nir_export_and_plots_name_the_snn_they_came_from(tmp_path, capsys, monkeypatch):
    import nir
    from PIL import Image

    from annsnn.workspace import snn_file

    monkeypatch.chdir(tmp_path)
    code, _, err = _cli(capsys, "convert", "--target", "nir", "--T", "4", "--calib-samples", "300", "--out", "n.snn.pt")
    assert code == 0, err
    code, _, err = _cli(capsys, "export", "n.snn.pt", "--nir", "n.nir")
    assert code == 0, err
    source = json.loads(nir.read("n.nir").metadata["annsnn_source"])
    assert source == {"path": "n.snn.pt", "sha256": snn_file("n.snn.pt").sha256}
    code, _, err = _cli(capsys, "energy", "n.snn.pt", "--T", "2,4", "--samples", "10", "--plot", "plots")
    assert code == 0, err
    named = str(snn_file("n.snn.pt"))
    pngs = sorted((tmp_path / "plots").glob("*.png"))
    assert pngs and all(Image.open(p).text.get("Source") == named for p in pngs)


def test_e_a_lif_layer_is_labelled_by_its_own_kind(tmp_path):
    """A NIR graph's LIF layer was listed as 'IFNeurons' in the per-layer counts."""
    import nir
    import numpy as np

    import torch

    from annsnn.analyzer import Analyzer
    from annsnn.nir_io import load_nir

    rng = np.random.default_rng(0)
    nodes = {
        "input": nir.Input(input_type={"input": np.array([4])}),
        "fc1": nir.Affine(weight=rng.normal(0, 0.6, (3, 4)).astype(np.float32), bias=np.zeros(3, np.float32)),
        "lif": nir.LIF(tau=np.full(3, 5.0), r=np.full(3, 2.0), v_leak=np.zeros(3), v_threshold=np.ones(3), v_reset=np.zeros(3)),
        "fc2": nir.Affine(weight=rng.normal(0, 0.5, (2, 3)).astype(np.float32), bias=np.zeros(2, np.float32)),
        "output": nir.Output(output_type={"output": np.array([2])}),
    }
    graph = nir.NIRGraph(nodes=nodes, edges=[("input", "fc1"), ("fc1", "lif"), ("lif", "fc2"), ("fc2", "output")])
    nir.write(str(tmp_path / "lif.nir"), graph)
    snn = load_nir(tmp_path / "lif.nir")
    kinds = {type(m).__name__ for m in snn.neuron_layers().values()}
    assert kinds and "IFNeurons" not in kinds, kinds
    analyzer = Analyzer(snn, [3])
    analyzer.run(torch.rand(2, 4), torch.tensor([0, 1]))
    labels = {layer.type for layer in analyzer.report().layers if layer.name in snn.neuron_layers()}
    assert labels == kinds, (labels, kinds)


@pytest.mark.parametrize("args, words", [
    (("energy", V1_SNN, "--T", "4", "--samples", "10", "--energy-model", "45nm-fp32+sram+sram"), ("already counts memory",)),
    (("evaluate", V1_SNN, "--T", "4", "--samples", "10", "--device", "cpu:3"), ("cpu:3", "one device")),
])
def test_e_earlier_left_alone_inputs_are_one_clear_line(capsys, args, words):
    """Accepted before: memory traffic counted twice (+sram+sram), and a CPU 'index' that
    means nothing."""
    code, _, err = _cli(capsys, *args)
    _one_error_line(code, err, contains=words)
    assert "━" not in err


def test_e_an_snn_path_that_is_a_folder_says_so(tmp_path, capsys):
    (tmp_path / "adir").mkdir()
    code, _, err = _cli(capsys, "export", tmp_path / "adir", "--nir", tmp_path / "x.nir")
    _one_error_line(code, err, contains=("is a folder",))


def test_e_evaluate_says_its_ann_row_is_the_avgpool_variant(tmp_path, capsys):
    code, _, err = _cli(capsys, "convert", *_pool_model(tmp_path), "--calibration", "none", "--maxpool", "avg", "--calib-samples", "64", "--out", tmp_path / "a.snn.pt")
    assert code == 0, err
    code, out, err = _cli(capsys, "evaluate", tmp_path / "a.snn.pt", "--T", "4", "--samples", "10")
    assert code == 0, err
    assert "--maxpool avg" in " ".join(out.split())


def test_e_file_names_with_brackets_are_printed_as_they_are(tmp_path, capsys):
    """rich read '[red]' as markup: 'wrote e[bold].json' was printed as 'wrote e.json'."""
    import shutil

    snn = tmp_path / "d[red].snn.pt"
    shutil.copy(V1_SNN, snn)
    code, out, err = _cli(capsys, "energy", snn, "--T", "2", "--samples", "10", "--json", tmp_path / "e[bold].json")
    assert code == 0, err
    flat = "".join(out.split())
    assert "d[red].snn.pt" in flat and "e[bold].json" in flat, out
    assert (tmp_path / "e[bold].json").is_file()


def test_e_target_nir_keeps_an_explicit_calibration_or_refuses_it(tmp_path, capsys):
    """An explicit --calibration threshold+step-bias was silently replaced by threshold+bias;
    --target nir --mode 99.9 was refused for a per-step bias the user never asked for."""
    from annsnn.artifact import load_snn

    code, _, err = _cli(capsys, "convert", "--target", "nir", "--T", "4", "--calibration", "threshold+step-bias", "--calib-samples", "300", "--out", tmp_path / "a.snn.pt")
    _one_error_line(code, err, contains=("per-step bias",))
    assert not (tmp_path / "a.snn.pt").exists()
    code, _, err = _cli(capsys, "convert", "--target", "nir", "--T", "4", "--mode", "99.9", "--calib-samples", "300", "--out", tmp_path / "b.snn.pt")
    assert code == 0, err
    options = load_snn(tmp_path / "b.snn.pt").record.options
    assert (options["threshold"], options["bias"]) == ("mode", "layer")


def test_e_zoo_train_stdp_arch_without_its_rule_names_the_flags(tmp_path, capsys):
    code, _, err = _cli(capsys, "zoo", "train", "stdp_mnist", "--out", tmp_path / "x.pt")
    _one_error_line(code, err, contains=("--snn --rule stdp",))


def test_e_the_per_dataset_table_fits_80_columns_without_cutting_numbers(capsys):
    code, out, err = _cli(capsys, "energy", V1_SNN, "--T", "8,32", "--samples", "10", "--per-dataset")
    assert code == 0, err
    assert "…" not in out and max(len(line) for line in out.splitlines()) <= 80, out


def test_e_energy_ann_names_its_model_file(capsys):
    code, out, err = _cli(capsys, "energy", "--ann", embedded_checkpoint())
    assert code == 0, err
    assert out.splitlines()[0].startswith(str(embedded_checkpoint())), out


@pytest.mark.parametrize("command", ["evaluate", "energy"])
@pytest.mark.parametrize("encoding", ["direct", "events"])
def test_e_seed_without_poisson_input_is_refused(capsys, command, encoding):
    """--seed seeds the Poisson encoder only; with direct or event input it was accepted,
    did nothing, and was recorded in the JSON as if it had."""
    code, out, err = _cli(capsys, command, V1_SNN, "--T", "8", "--samples", "10", "--encoding", encoding, "--seed", "7")
    _one_error_line(code, err, contains=("--seed", "--encoding poisson"))
    assert out == ""


def test_e_the_json_records_the_batch_size_that_poisson_draws_depend_on(capsys, tmp_path):
    """Poisson spikes are drawn per batch (seed, batch index): --batch-size changes them, so
    a result that does not record it cannot be reproduced."""
    code, _, err = _cli(capsys, "evaluate", V1_SNN, "--T", "8", "--samples", "10", "--encoding", "poisson", "--batch-size", "4", "--json", tmp_path / "e.json")
    assert code == 0, err
    assert json.loads((tmp_path / "e.json").read_text())["batch_size"] == 4


def test_e_zoo_list_names_the_stdp_network_its_train_help_uses(capsys):
    """'zoo train --help' uses stdp_mnist as an example, but 'zoo list' never named it."""
    code, out, err = _cli(capsys, "zoo", "list", "--no-macs")
    assert code == 0, err
    assert "annsnn zoo train stdp_mnist --snn --rule stdp" in " ".join(out.split()) and max(len(line) for line in out.splitlines()) <= 80



def _flip_inside_a_tensor(path: Path) -> None:
    """Flip bytes in the middle of the largest stored tensor (its CRC no longer matches)."""
    import zipfile

    with zipfile.ZipFile(path) as archive:
        info = max((i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    data = bytearray(path.read_bytes())
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra) + info.file_size // 2  # the local header is 30 bytes + name + extra
    for i in range(start, start + 16):
        data[i] ^= 0x40
    path.write_bytes(bytes(data))


def test_e_a_damaged_tensor_in_an_snn_or_a_checkpoint_is_refused_not_used(tmp_path, capsys, small_snn_file):
    """Flipped bytes inside a weight (the zip's CRC no longer matches) loaded silently: exit 0,
    other accuracy, |w| up to 1e5 in a converted model."""
    import shutil

    import torch

    snn = tmp_path / "flipped.snn.pt"
    shutil.copy(small_snn_file, snn)
    _flip_inside_a_tensor(snn)
    code, out, err = _cli(capsys, "evaluate", snn, "--T", "2", "--samples", "5")
    _one_error_line(code, err, contains=("flipped.snn.pt", "corrupt"))
    checkpoint = tmp_path / "flipped.pt"
    torch.save(torch.load(embedded_checkpoint(), weights_only=True), checkpoint)
    _flip_inside_a_tensor(checkpoint)
    code, out, err = _cli(capsys, "info", checkpoint)
    _one_error_line(code, err, contains=("flipped.pt", "corrupt"))


def test_e_a_torchscript_file_with_a_damaged_directory_is_one_line(tmp_path, capsys):
    """Bytes flipped in the zip's central directory made is_pt2 raise UnicodeDecodeError:
    'internal error', exit 1, on every .pt load."""
    import torch

    from annsnn.model_files import load_model

    path = tmp_path / "script.pt"
    torch.jit.save(torch.jit.script(load_model(embedded_checkpoint()).module), str(path))
    import zipfile

    with zipfile.ZipFile(path) as archive:
        directory = archive.start_dir  # the central directory; its first entry's name starts 46 bytes in
        assert archive.infolist()[0].flag_bits & 0x800  # names are flagged UTF-8
    data = bytearray(path.read_bytes())
    data[directory + 46 : directory + 50] = b"\xff\xfe\xfd\xfc"  # not UTF-8
    path.write_bytes(bytes(data))
    code, _, err = _cli(capsys, "info", path, "--input-shape", "1,8,8")
    _one_error_line(code, err, contains=("script.pt",))
    assert "internal error" not in err


@pytest.mark.parametrize("content", ['{"last_snn": 5}', "[1, 2]", "null", '{"last_snn": ""}', "\x00\x01binary"])
def test_e_a_damaged_last_conversion_record_is_named_as_damaged(tmp_path, capsys, monkeypatch, content):
    """A damaged record said 'none converted from this directory yet', which is not what
    happened, and did not say where the record is."""
    from annsnn.workspace import _record

    monkeypatch.chdir(tmp_path)
    _, record = _record(tmp_path)
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(content, encoding="utf-8")
    code, _, err = _cli(capsys, "evaluate", "--T", "2", "--samples", "5")
    _one_error_line(code, err, contains=(str(record), "damaged"))


def test_e_arch_is_refused_where_the_model_holds_its_own_network(tmp_path, capsys):
    """--arch converted the bundled CNN (or a zoo/.pt2/ONNX/TorchScript model) as if it had
    not been given, exit 0; only a state_dict reads it."""
    import torch

    from annsnn.model_files import load_model

    script = tmp_path / "s.pt"
    torch.jit.save(torch.jit.script(load_model(embedded_checkpoint()).module), str(script))
    for args in (("info", "--arch", "resnet20"), ("info", "zoo:digits_cnn", "--arch", "resnet20"), ("info", script, "--arch", "digits_cnn", "--input-shape", "1,8,8")):
        code, out, err = _cli(capsys, *args)
        _one_error_line(code, err, contains=("--arch", "drop --arch"))
    code, out, err = _cli(capsys, "info", embedded_checkpoint(), "--arch", "digits_cnn")  # a checkpoint reads it
    assert code == 0, err


def _pool_model(tmp_path) -> list:
    """A digits-sized CNN with a max-pool (a whole pickled module: read with --trust)."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    pool = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(128, 10)).eval()
    torch.save(pool, str(tmp_path / "pool.pt"))
    return [tmp_path / "pool.pt", "--trust", "--data", "digits"]


@pytest.mark.parametrize("flags, words", [
    (["--calibration", "none", "--T", "8"], ("--T", "--calibration none")),
    (["--calibration", "none", "--bias-samples", "10"], ("--bias-samples", "no bias")),
    (["--calibration", "threshold", "--bias-samples", "10"], ("--bias-samples", "no bias")),
    (["--mode", "max", "--percentile-of", "positive"], ("--percentile-of", "percentile")),
    (["--mode", "0.5", "--percentile-of", "positive"], ("--percentile-of", "percentile")),
    (["--maxpool", "avg", "--readout-delay", "0"], ("--maxpool avg", "no max-pool")),
])
def test_e_a_convert_flag_that_would_change_nothing_is_refused(tmp_path, capsys, flags, words):
    """Each was recorded in the SNN and its JSON, exit 0, with the same SNN as without it
    (--calibration none --T 8; --bias-samples without a bias; --percentile-of with a
    non-percentile --mode; --maxpool avg on a model without max-pools, which also printed
    'MaxPool was replaced')."""
    target = tmp_path / "x.snn.pt"
    code, _, err = _cli(capsys, "convert", *flags, "--calib-samples", "64", "--out", target)
    _one_error_line(code, err, contains=words)
    assert not target.exists()


def test_e_convert_calibration_none_with_a_fixed_delay_names_no_none(tmp_path, capsys):
    """'--calibration none --readout-delay 2' printed 'left out at T >= None'."""
    code, out, err = _cli(capsys, "convert", "--calibration", "none", "--readout-delay", "2", "--calib-samples", "64", "--out", tmp_path / "x.snn.pt")
    assert code == 0, err
    flat = " ".join(out.split())
    assert "None" not in flat and "the first 2 output step(s) are left out at every T" in flat, flat


def _cat_pool_model(tmp_path) -> list:
    """A max-pool that reads two neuron layers through a cat (copied spikes): TorchScript,
    which needs no --trust."""
    import torch
    from torch import nn

    class CatPool(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1, self.c2 = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(1, 4, 3, padding=1)
            self.pool, self.fc = nn.MaxPool2d(2), nn.Linear(128, 10)

        def forward(self, x):
            y = torch.cat([torch.relu(self.c1(x)), torch.relu(self.c2(x))], 1)
            return self.fc(torch.flatten(self.pool(y), 1))

    torch.manual_seed(0)
    torch.jit.save(torch.jit.trace(CatPool().eval(), torch.zeros(1, 1, 8, 8)), str(tmp_path / "cat.pt"))
    return [tmp_path / "cat.pt", "--data", "digits"]


@pytest.mark.parametrize("model", ["pool", "cat"])
def test_e_max_spikes_with_a_spiking_max_pool_is_refused_before_the_calibration(tmp_path, capsys, monkeypatch, model):
    """The refusal came after the whole calibration pass (the scale rule found it); through a
    cat it still did after the first fix, which followed only max-pools back to a neuron. The
    error is the only line: no blank line of the progress bars before it."""
    import annsnn.calibrator as calibrator

    def observed(self, batch):
        raise AssertionError("the calibration ran")

    monkeypatch.setattr(calibrator.Calibrator, "observe", observed)
    source = _pool_model(tmp_path) if model == "pool" else _cat_pool_model(tmp_path)
    code, _, err = _cli(capsys, "convert", *source, "--max-spikes", "2", "--readout-delay", "0", "--calib-samples", "64", "--out", tmp_path / "x.snn.pt")
    _one_error_line(code, err, contains=("--max-spikes", "--maxpool avg", "--max-spikes 1"))
    assert err.startswith("error: ") and err.count("\n") == 1, repr(err)


def test_e_an_snn_file_given_as_the_model_is_named_as_one(tmp_path, capsys):
    """It said "holds no state_dict of tensors", which does not tell the user what to do;
    named '.snn' (a name 'convert --out' takes and evaluate reads) it said "unknown model
    file type"."""
    import shutil

    other = tmp_path / "m.snn"
    shutil.copy(V1_SNN, other)
    for snn in (V1_SNN, other):
        for command in (("convert", snn, "--out", tmp_path / "x.snn.pt"), ("info", snn)):
            code, _, err = _cli(capsys, *command)
            _one_error_line(code, err, contains=("converted SNN", "annsnn evaluate"))


def test_e_an_empty_class_folder_is_named_as_empty(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    for split in ("train", "test"):
        for cls in ("cat", "dog"):
            (tmp_path / "d" / split / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(tmp_path / "d" / split / "cat" / f"{i}.png")
        (tmp_path / "d" / split / "dog" / "notes.txt").write_text("not an image")
    code, _, err = _cli(capsys, "convert", "--data", f"imagefolder:{tmp_path / 'd'}", "--calibration", "none", "--calib-samples", "3", "--out", tmp_path / "x.snn.pt")
    _one_error_line(code, err, contains=("'dog'", "no images", "empty"))


def test_e_calibration_threshold_with_mode_does_not_offer_a_bias_it_never_had(capsys):
    """'--calibration threshold --mode 99' said "use --calibration none to keep its bias",
    but --calibration threshold fits no bias."""
    code, _, err = _cli(capsys, "convert", "--calibration", "threshold", "--mode", "99")
    line = _one_error_line(code, err, contains=("--calibration none", "without a bias"))
    assert "keep its bias" not in line
    code, _, err = _cli(capsys, "convert", "--calibration", "threshold+bias", "--mode", "99")
    _one_error_line(code, err, contains=("--calibration bias", "keep its bias"))


def test_e_a_model_with_no_activation_that_can_spike_says_it_does_not_spike(tmp_path, capsys):
    """--hybrid on a model whose only activation is GELU wrote an "SNN" without a spiking
    neuron (exit 0) and said nothing about it. It is kept (it is equivalent to the model,
    and torchvision's EfficientNet, ConvNeXt and Swin convert this way), with a note."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    gelu = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.GELU(), nn.Linear(16, 10)).eval()
    torch.save(gelu, str(tmp_path / "gelu.pt"))
    code, out, err = _cli(capsys, "convert", tmp_path / "gelu.pt", "--trust", "--data", "digits", "--hybrid", "--readout-delay", "0", "--calib-samples", "64",
                          "--out", tmp_path / "g.snn.pt", "--json", tmp_path / "g.json")
    assert code == 0, err
    assert "this network does not spike" in " ".join(out.split())
    report = json.loads((tmp_path / "g.json").read_text())["report"]
    assert report["neurons"] == 0 and any("does not spike" in note for note in report["notes"])


@pytest.mark.parametrize("layers, flags, words", [
    ("pool", [], ("NIR has no max-pool", "--maxpool avg")),
    ("gelu", ["--hybrid"], ("NIR cannot express", "GELU", "analog")),
])
def test_e_target_nir_refuses_what_the_graph_shows_before_the_calibration(tmp_path, capsys, monkeypatch, layers, flags, words):
    """A spiking max-pool or an analog (--hybrid) layer was refused by the exporter's check
    after the whole calibration pass; the graph shows both before it."""
    import torch
    from torch import nn

    import annsnn.calibrator as calibrator

    def observed(self, batch):
        raise AssertionError("the calibration ran")

    monkeypatch.setattr(calibrator.Calibrator, "observe", observed)
    torch.manual_seed(0)
    model = {"pool": nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(128, 10)),
             "gelu": nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.GELU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 10))}[layers].eval()
    torch.save(model, str(tmp_path / "m.pt"))
    target = tmp_path / "m.snn.pt"
    code, _, err = _cli(capsys, "convert", tmp_path / "m.pt", "--trust", "--data", "digits", *flags, "--target", "nir", "--T", "8", "--calib-samples", "300", "--out", target)
    _one_error_line(code, err, contains=words)
    assert not target.exists()


def test_e_a_training_split_too_small_for_the_delay_choice_is_refused_first_with_advice_that_works(tmp_path, capsys, monkeypatch):
    """With 40 training images the refusal came after the calibration pass and asked for
    '--calib-samples > --bias-samples', which more --calib-samples cannot give."""
    import numpy as np
    from PIL import Image

    import annsnn.calibrator as calibrator

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for cls in ("a", "b"):
            (tmp_path / "d" / split / cls).mkdir(parents=True)
            for i in range(20):
                Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "d" / split / cls / f"{i}.png")

    def observed(self, batch):
        raise AssertionError("the calibration ran")

    monkeypatch.setattr(calibrator.Calibrator, "observe", observed)
    code, _, err = _cli(capsys, "convert", "zoo:cifar_cnn_s", "--data", f"imagefolder:{tmp_path / 'd'}", "--out", tmp_path / "x.snn.pt")
    _one_error_line(code, err, contains=("has 40 training images", "--bias-samples", "--readout-delay K"))


@pytest.mark.parametrize("how", ["console script", "python -m annsnn"])
def test_e_ctrl_c_while_the_libraries_load_is_one_line(tmp_path, how):
    """Ctrl-C in the first seconds (while torch loads: about 15 s on a loaded machine)
    printed a KeyboardInterrupt traceback; after the imports it was one line. Both ways of
    starting the CLI are checked; the interrupt lands while it is still importing."""
    exe = [str(Path(sys.executable).with_name("annsnn"))] if how == "console script" else [sys.executable, "-m", "annsnn"]
    probe = subprocess.run([sys.executable, "-X", "importtime", "-c", "import annsnn.cli.main"], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    cumulative_us = max(int(line.split("|")[1]) for line in probe.stderr.splitlines() if line.startswith("import time:") and line.split("|")[1].strip().isdigit())
    assert cumulative_us > 1e6, probe.stderr[-500:]  # torch and the CLI take seconds to load: the interrupt below lands inside them
    # a shell's background job starts with SIGINT ignored, and Python then leaves it ignored: restore the default, as a terminal has it
    proc = subprocess.Popen(exe + ["info"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    time.sleep(0.3)  # the interpreter is up (its SIGINT handler installed) and importing
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert proc.returncode == 130 and err.strip().splitlines() == ["interrupted"], (proc.returncode, err)


def test_e_review_messages_say_what_the_user_did(tmp_path, capsys):
    """From a review of the refusals above: --calibration none --readout-delay auto asked for
    --T N, which is then refused; '--mode 100' was called '--mode max'; --target nir blamed
    --hybrid for an op when --hybrid was not given; and the NIR pre-check named a layer
    otherwise than the conversion does ('2' against 'model.2')."""
    import torch
    from torch import nn

    code, _, err = _cli(capsys, "convert", "--calibration", "none", "--readout-delay", "auto", "--calib-samples", "64")
    line = _one_error_line(code, err, contains=("--calibration none", "fixed --readout-delay K"))
    assert "needs --T" not in line
    code, _, err = _cli(capsys, "convert", "--mode", "100", "--percentile-of", "positive", "--calib-samples", "64")
    _one_error_line(code, err, contains=("--mode 100",))
    torch.manual_seed(0)
    soft = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10), nn.LogSoftmax(dim=1)).eval()
    torch.save(soft, str(tmp_path / "soft.pt"))
    code, _, err = _cli(capsys, "convert", tmp_path / "soft.pt", "--trust", "--data", "digits", "--target", "nir", "--T", "8", "--calib-samples", "300", "--out", tmp_path / "s.snn.pt")
    line = _one_error_line(code, err, contains=("LogSoftmax", "no spiking form"))
    assert "--hybrid" not in line
    pool = _pool_model(tmp_path)
    code, _, err = _cli(capsys, "convert", *pool, "--target", "nir", "--T", "8", "--calib-samples", "300", "--out", tmp_path / "p.snn.pt")
    nir_line = _one_error_line(code, err, contains=("NIR has no max-pool", "--maxpool avg"))
    code, _, err = _cli(capsys, "convert", *pool, "--max-spikes", "2", "--readout-delay", "0", "--calib-samples", "64", "--out", tmp_path / "p.snn.pt")
    burst_line = _one_error_line(code, err)
    assert "max-pool model.2" in nir_line and "layer model.2:" in burst_line, (nir_line, burst_line)


@pytest.mark.parametrize("args, words", [
    (("robustness", V1_SNN, "--T", "4", "--samples", "10", "--fgsm", "0.1", "--attack-T", "1"), ("--attack-T", "--attack-on snn")),
    (("robustness", V1_SNN, "--T", "4", "--samples", "10", "--fgsm", "0.1", "--surrogate", "erf"), ("--surrogate", "--attack-on snn")),
    (("energy", V1_SNN, "--T", "4", "--samples", "10", "--grid-intensity", "100"), ("--grid-intensity", "--per-dataset")),
])
def test_e_flags_that_shape_nothing_in_this_run_are_refused(tmp_path, capsys, args, words):
    """From a review: --attack-T and --surrogate with attacks crafted on the ANN (the
    default), and --grid-intensity without --per-dataset or --measure, ran with exit 0 and the
    same figures; robustness's JSON recorded attack_T and surrogate as if they were used."""
    out = tmp_path / "r.json"
    code, _, err = _cli(capsys, *args, "--json", out)
    _one_error_line(code, err, contains=words)
    assert not out.exists()


@pytest.mark.parametrize("args, words", [
    (("--fgsm", "0:1:0.0000001"), ("10,000,001 strengths", "larger STEP")),
    (("--fgsm", "0.1:0:0.05"), ("START <= STOP", "STEP > 0")),
    (("--noise", "0:1:0"), ("START <= STOP", "STEP > 0")),
])
def test_e_a_strength_range_that_cannot_run_says_why(capsys, args, words):
    """From a review: a range with too many points and a backward range both said "is not a
    number or a range START:STOP:STEP" (the first because UsageError is a ValueError, which
    the number parser caught and reworded)."""
    code, _, err = _cli(capsys, "robustness", V1_SNN, "--T", "4", "--samples", "10", *args)
    line = _one_error_line(code, err, contains=words)
    assert "is not a number" not in line


def test_e_an_empty_energy_model_name_is_named_as_empty(capsys):
    """'--energy-model ""' said "energy-model file '.' does not exist"."""
    code, _, err = _cli(capsys, "energy", V1_SNN, "--T", "4", "--samples", "10", "--energy-model", "")
    line = _one_error_line(code, err, contains=("empty",))
    assert "'.'" not in line
