"""Activation store: round trip, integrity checks, resume after a crash, streaming and splits."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from core.errors import ChecksumError, ConfigError, DataError, ShapeError
from core.samples import Sample
from core.store import (
    ActivationDataModule,
    ActivationStore,
    ShardWriter,
    ShuffleBuffer,
    holdout_mask,
    read_manifest,
    read_samples_tsv,
    write_samples_tsv,
)

D = 8


def fake_samples(n_samples: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """Samples of varying length whose activations encode (sample, position) for checking."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for s in range(n_samples):
        n = int(torch.randint(1, 9, (1,), generator=g))
        pos = torch.arange(n)
        acts = torch.randn(n, D, generator=g)
        acts[:, 0] = s
        acts[:, 1] = pos.float()
        out.append({"acts": acts, "sample": torch.full((n,), s), "position": pos,
                    "token": torch.randint(0, 30, (n,), generator=g)})
    return out


def write_store(root: Path, samples, *, shard_tokens: int = 16, dtype: str = "float32",
                start: int = 0, per_add: int = 3, close: bool = True) -> ShardWriter:
    w = ShardWriter(root, model="toy", hook="blocks.0.hook_resid_post", d=D, dtype=dtype,
                    shard_tokens=shard_tokens, meta={"note": "test"})
    for i in range(start, len(samples), per_add):
        group = samples[i:i + per_add]
        w.add(torch.cat([g["acts"] for g in group]), torch.cat([g["sample"] for g in group]),
              torch.cat([g["position"] for g in group]), torch.cat([g["token"] for g in group]),
              samples_done=i + len(group))
    if close:
        w.close()
    return w


def concat(samples, key):
    return torch.cat([s[key] for s in samples])


def test_round_trip_values_sample_position_token(tmp_path):
    samples = fake_samples(40)
    write_store(tmp_path, samples)
    store = ActivationStore(tmp_path, verify=True)
    assert store.d == D and store.model == "toy" and store.hook == "blocks.0.hook_resid_post"
    assert store.n_tokens == sum(len(s["sample"]) for s in samples)
    assert store.n_samples == 40 and len(store.shard_paths) > 1
    assert store.meta == {"note": "test"}
    data = store.load(columns=("acts", "sample", "position", "token"))
    for key in ("acts", "sample", "position", "token"):
        assert torch.equal(data[key], concat(samples, key)), key
    assert data["acts"].dtype == torch.float32
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["complete"] and manifest["format_version"] == 1
    assert sum(s["n_tokens"] for s in manifest["shards"]) == manifest["n_tokens"]
    assert all(len(s["sha256"]) == 64 for s in manifest["shards"])


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_low_precision_on_disk_float32_out(tmp_path, dtype):
    samples = fake_samples(10)
    write_store(tmp_path, samples, dtype=dtype)
    store = ActivationStore(tmp_path)
    acts = store.load()["acts"]
    assert acts.dtype == torch.float32
    expected = concat(samples, "acts").to(getattr(torch, dtype)).float()
    assert torch.equal(acts, expected)


def test_checksum_failure_names_shard_and_fix(tmp_path):
    write_store(tmp_path, fake_samples(30))
    shard = tmp_path / "shard_00001.safetensors"
    raw = bytearray(shard.read_bytes())
    raw[-5] ^= 0xFF
    shard.write_bytes(bytes(raw))
    with pytest.raises(ChecksumError) as err:
        ActivationStore(tmp_path, verify=True)
    message = str(err.value)
    assert "shard_00001.safetensors" in message and "checksum" in message
    assert "delete" in message and "harvest" in message


def test_deleted_corrupt_shard_is_rebuilt_by_resume(tmp_path):
    samples = fake_samples(30)
    write_store(tmp_path, samples)
    n_shards = len(ActivationStore(tmp_path).shard_paths)
    (tmp_path / "shard_00001.safetensors").unlink()
    w = ShardWriter(tmp_path, model="toy", hook="blocks.0.hook_resid_post", d=D, shard_tokens=16)
    assert not w.complete
    done = w.samples_done
    assert 0 < done < 30
    del w
    write_store(tmp_path, samples, start=done)
    store = ActivationStore(tmp_path)
    assert len(store.shard_paths) >= n_shards - 1
    assert torch.equal(store.load(("acts",))["acts"], concat(samples, "acts"))


def test_nan_activation_file_rejected_naming_file(tmp_path):
    write_store(tmp_path, fake_samples(12))
    store = ActivationStore(tmp_path, verify=False)
    path = store.shard_paths[0]
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    tensors["acts"][2, 3] = float("nan")
    save_file(tensors, str(path))
    store = ActivationStore(tmp_path, verify=False)
    with pytest.raises(DataError) as err:
        store.load()
    assert path.name in str(err.value) and "NaN" in str(err.value)


def test_writer_rejects_inf_and_bad_shapes(tmp_path):
    w = ShardWriter(tmp_path, model="toy", hook="h", d=D, dtype="float16")
    acts = torch.zeros(2, D)
    acts[1, 0] = 1e6  # overflows float16
    with pytest.raises(DataError, match="NaN or inf"):
        w.add(acts, torch.zeros(2), torch.arange(2), torch.zeros(2), samples_done=1)
    with pytest.raises(ShapeError):
        w.add(torch.zeros(2, D + 1), torch.zeros(2), torch.arange(2), torch.zeros(2), samples_done=1)
    with pytest.raises(ConfigError):
        ShardWriter(tmp_path, model="other", hook="h", d=D, dtype="float16")


def test_resume_after_kill_mid_write(tmp_path):
    samples = fake_samples(50, seed=3)
    w = write_store(tmp_path, samples[:20], close=False)
    # Simulate a kill: pending rows are lost, a temp file and an unlisted shard are left behind.
    committed = w.samples_done
    assert 0 < committed <= 20
    n_listed = len(read_manifest(tmp_path)["shards"])
    (tmp_path / f".shard_{n_listed:05d}.safetensors.abc123.tmp").write_bytes(b"partial")
    (tmp_path / f"shard_{n_listed:05d}.safetensors").write_bytes(b"renamed but not in manifest")
    with pytest.raises(DataError, match="incomplete"):
        ActivationStore(tmp_path)

    resumed = ShardWriter(tmp_path, model="toy", hook="blocks.0.hook_resid_post", d=D, shard_tokens=16)
    assert resumed.samples_done == committed
    assert not list(tmp_path.glob(".*.tmp"))
    del resumed
    write_store(tmp_path, samples, start=committed)
    store = ActivationStore(tmp_path)
    data = store.load(("acts", "sample", "position"))
    assert store.n_samples == 50
    assert torch.equal(data["sample"], concat(samples, "sample"))  # no duplicated or lost tokens
    assert torch.equal(data["position"], concat(samples, "position"))
    assert torch.equal(data["acts"], concat(samples, "acts"))


KILLED_WRITER = textwrap.dedent("""
    import os, signal
    import torch
    import core.store.writer as writer

    real_save, calls = writer.save_file, []

    def save_then_die(tensors, path, metadata=None):
        calls.append(path)
        if len(calls) == 3:  # the third shard: write half of it, then die without cleanup
            real_save(tensors, path, metadata=metadata)
            data = open(path, "rb").read()
            open(path, "wb").write(data[: len(data) // 2])
            os.kill(os.getpid(), signal.SIGKILL)
        real_save(tensors, path, metadata=metadata)

    writer.save_file = save_then_die
    acts, meta = torch.load({data!r})
    w = writer.ShardWriter({root!r}, model="toy", hook="blocks.0.hook_resid_post", d=acts.shape[1],
                           shard_tokens=16)
    for i, (lo, hi, done) in enumerate(meta):
        w.add(acts[lo:hi], torch.zeros(hi - lo), torch.zeros(hi - lo), torch.zeros(hi - lo),
              samples_done=done)
""")


def test_resume_after_real_sigkill_mid_shard(tmp_path):
    root = tmp_path / "store"
    samples = fake_samples(60, seed=4)
    acts = concat(samples, "acts")
    bounds, lo = [], 0
    for i in range(0, 60, 3):
        hi = lo + sum(len(s["sample"]) for s in samples[i:i + 3])
        bounds.append((lo, hi, i + 3))
        lo = hi
    torch.save((acts, bounds), tmp_path / "input.pt")
    code = KILLED_WRITER.format(data=str(tmp_path / "input.pt"), root=str(root))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    assert list(root.glob(".*.tmp")), "the kill should leave a half-written temp file"
    manifest = read_manifest(root)
    assert len(manifest["shards"]) == 2 and not manifest["complete"]

    w = ShardWriter(root, model="toy", hook="blocks.0.hook_resid_post", d=D, shard_tokens=16)
    done = w.samples_done
    assert done == manifest["shards"][-1]["samples_done"]
    assert not list(root.glob(".*.tmp"))
    del w
    write_store(root, samples, start=done)
    data = ActivationStore(root).load(("acts",))
    assert torch.equal(data["acts"], acts)  # nothing lost, nothing written twice


def test_missing_manifest_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="manifest.json"):
        ActivationStore(tmp_path)


def test_samples_tsv_round_trip(tmp_path):
    samples = [Sample("seqA", "EVQL", {"chain": "H", "score": 0.5}),
               Sample("seqB", "DIQM", {"chain": "L", "genes": ["IGKV1", "IGKJ1"]})]
    path = write_samples_tsv(tmp_path / "samples.tsv", samples)
    table = read_samples_tsv(path)
    assert list(table.index) == [0, 1]
    assert list(table["id"]) == ["seqA", "seqB"]
    assert table.loc[1, "chain"] == "L" and json.loads(table.loc[1, "genes"]) == ["IGKV1", "IGKJ1"]


def test_shuffle_buffer_emits_each_row_once():
    g = torch.Generator().manual_seed(0)
    buf = ShuffleBuffer(10, g)
    x = torch.arange(37).float().unsqueeze(1)
    got = [b for b in buf.push(x, 4)] + list(buf.drain(4))
    ids = torch.cat(got).squeeze(1).long()
    assert sorted(ids.tolist()) == list(range(37))
    assert not torch.equal(ids, torch.arange(37))


def test_datamodule_every_train_token_once_per_epoch_and_bounded(tmp_path):
    samples = fake_samples(120, seed=1)
    write_store(tmp_path, samples, shard_tokens=32)
    dm = ActivationDataModule(tmp_path, batch_size=16, buffer_tokens=48, holdout_fraction=0.2, seed=0)
    store = dm.store
    reads = []
    original = store.read_shard

    def counting(index, columns=None):
        reads.append(index)
        return original(index, columns)

    store.read_shard = counting
    loader = dm.train_dataloader()
    it = iter(loader)
    first = next(it)
    assert first.shape == (16, D) and first.dtype == torch.float32
    per_shard = min(store.shard_sizes)
    # Only enough shards to fill the buffer once have been read before the first batch.
    assert len(reads) <= -(-dm.buffer_tokens // max(1, per_shard // 2)) + 1
    assert dm.train_stream.buffer.rows.numel() * 4 == dm.memory_bound_bytes == 48 * D * 4
    epoch1 = torch.cat([first, *it])
    epoch2 = torch.cat(list(loader))
    held = holdout_mask(concat(samples, "sample"), 0.2, 0)
    expected = {(int(a), int(b)) for a, b in concat(samples, "acts")[~held][:, :2].tolist()}
    for epoch in (epoch1, epoch2):
        keys = [(int(a), int(b)) for a, b in epoch[:, :2].tolist()]
        assert len(keys) == len(set(keys)) == dm.n_train_tokens
        assert set(keys) == expected
    assert not torch.equal(epoch1, epoch2)  # reshuffled between epochs


def test_holdout_disjoint_and_deterministic(tmp_path):
    samples = fake_samples(200, seed=2)
    write_store(tmp_path, samples, shard_tokens=64)
    dm = ActivationDataModule(tmp_path, batch_size=32, holdout_fraction=0.25, seed=5)
    train_samples = {int(s) for s in torch.cat(list(dm.train_dataloader()))[:, 0].tolist()}
    val = torch.cat(list(dm.val_dataloader()))
    val_samples = {int(s) for s in val[:, 0].tolist()}
    assert train_samples.isdisjoint(val_samples)
    assert len(train_samples | val_samples) == 200
    assert 0.1 < len(val_samples) / 200 < 0.4
    assert val.shape[0] == dm.n_val_tokens
    again = ActivationDataModule(tmp_path, batch_size=32, holdout_fraction=0.25, seed=9)
    assert torch.equal(torch.cat(list(again.val_dataloader())), val)  # split ignores the shuffle seed


def test_sequential_batches_are_never_empty(tmp_path):
    """Held-out rows fewer per shard than a batch: the sequential stream carries them over, and
    never yields an empty batch (which would make every mean metric NaN)."""
    samples = fake_samples(120, seed=3)
    write_store(tmp_path, samples, shard_tokens=16)
    dm = ActivationDataModule(tmp_path, batch_size=64, holdout_fraction=0.25, seed=1)
    sizes = [b.shape[0] for b in dm.val_dataloader()]
    assert sizes and min(sizes) > 0 and sum(sizes) == dm.n_val_tokens


def test_stacked_stores_give_batch_n_inputs_d(tmp_path):
    samples = fake_samples(30)
    write_store(tmp_path / "a", samples)
    doubled = [dict(s, acts=s["acts"] * 2) for s in samples]
    write_store(tmp_path / "b", doubled)
    dm = ActivationDataModule([tmp_path / "a", tmp_path / "b"], batch_size=8, holdout_fraction=0.0)
    batch = next(iter(dm.train_dataloader()))
    assert batch.shape == (8, 2, D)
    assert torch.allclose(batch[:, 1], 2 * batch[:, 0])
    assert dm.take(5).shape == (5, 2, D)


def test_targets_give_aligned_x_y_tuples(tmp_path):
    samples = fake_samples(40)
    write_store(tmp_path / "mlp_in", samples)
    targets = [dict(s, acts=-3 * s["acts"]) for s in samples]
    write_store(tmp_path / "mlp_out", targets)
    dm = ActivationDataModule(tmp_path / "mlp_in", targets=tmp_path / "mlp_out", batch_size=8,
                              buffer_tokens=24, holdout_fraction=0.1)
    n = 0
    for x, y in dm.train_dataloader():
        assert x.shape == y.shape and x.shape[1] == D
        assert torch.allclose(y, -3 * x)
        n += x.shape[0]
    assert n == dm.n_train_tokens
    x, y = next(iter(dm.val_dataloader()))
    assert torch.allclose(y, -3 * x)
    assert torch.allclose(dm.take_target(10), -3 * dm.take(10))
    assert dm.memory_bound_bytes == 24 * 2 * D * 4


def test_ddp_ranks_get_equal_full_batches_and_disjoint_tokens(tmp_path, monkeypatch):
    import core.store.datamodule as dmod

    samples = fake_samples(300, seed=6)
    write_store(tmp_path, samples, shard_tokens=40)
    dm = ActivationDataModule(tmp_path, batch_size=16, buffer_tokens=64, holdout_fraction=0.1)
    seen = []
    for rank in range(2):
        monkeypatch.setattr(dmod, "_distributed_slot", lambda r=rank: (r, 2))
        stream = dm._stream("train", shuffle=True)
        seen.append(list(stream))
    assert len(seen[0]) == len(seen[1]) > 0
    assert all(b.shape == (16, D) for batches in seen for b in batches)
    keys = [[(int(a), int(b)) for a, b in torch.cat(batches)[:, :2].tolist()] for batches in seen]
    assert set(keys[0]).isdisjoint(keys[1])
    assert len(keys[0]) + len(keys[1]) > 0.8 * dm.n_train_tokens


def test_stacking_stores_sharded_differently(tmp_path):
    samples = fake_samples(60, seed=7)
    write_store(tmp_path / "a", samples, shard_tokens=16)
    write_store(tmp_path / "b", [dict(s, acts=s["acts"] + 1) for s in samples], shard_tokens=40, per_add=2)
    dm = ActivationDataModule([tmp_path / "a", tmp_path / "b"], batch_size=8, holdout_fraction=0.2)
    assert dm.stores[0].shard_sizes != dm.stores[1].shard_sizes
    batches = list(dm.train_dataloader())
    x = torch.cat(batches)
    assert x.shape == (dm.n_train_tokens, 2, D)
    assert torch.allclose(x[:, 1], x[:, 0] + 1)
    store = dm.stores[1]
    rows = store.read_rows(5, 50, ("acts",))["acts"]
    assert torch.equal(rows, store.load()["acts"][5:50])
    write_store(tmp_path / "c", samples[:50])
    with pytest.raises(ShapeError, match="different numbers of tokens"):
        ActivationDataModule([tmp_path / "a", tmp_path / "c"])


@pytest.mark.parametrize("damage", [
    "checksum",
    # Each run starts the whole command (~10 s of CPU); the library tests above cover these fast.
    pytest.param("nan", marks=pytest.mark.slow),
    pytest.param("sae_shape", marks=pytest.mark.slow),
])
def test_cli_evaluate_on_corrupt_shard_exits_with_one_message(tmp_path, damage):
    """The command, not just the library: a corrupt shard (or one holding NaN, with a matching
    checksum) passed to a stage gives one message naming the shard and the fix, exit status 2,
    no traceback and no results written."""
    import importlib.util

    if importlib.util.find_spec("core.stages.evaluate") is None:
        pytest.skip("the evaluate stage is not part of this tree")
    from core.checkpoint import save_sae
    from core.dictionaries import DictionaryConfig, build_dictionary

    write_store(tmp_path / "store", fake_samples(30))
    save_sae(build_dictionary(DictionaryConfig("relu", d_in=D, d_sae=16)), tmp_path / "sae")
    shard = tmp_path / "store" / "shard_00001.safetensors"
    if damage == "sae_shape":
        cfg_path = tmp_path / "sae" / "cfg.json"
        cfg = json.loads(cfg_path.read_text())
        cfg["d_sae"] = cfg["sparsescope"]["dictionary"]["d_sae"] = 32
        cfg_path.write_text(json.dumps(cfg))
    elif damage == "checksum":
        raw = bytearray(shard.read_bytes())
        raw[-3] ^= 0xFF
        shard.write_bytes(bytes(raw))
    else:
        from safetensors.torch import load_file

        from core.io import sha256_file

        tensors = load_file(str(shard))
        tensors["acts"][1, 2] = float("inf")
        save_file(tensors, str(shard))
        manifest_path = tmp_path / "store" / "manifest.json"
        manifest = json.loads(manifest_path.read_text())
        manifest["shards"][1]["sha256"] = sha256_file(shard)
        manifest_path.write_text(json.dumps(manifest))
    run_dir = tmp_path / "eval"
    proc = subprocess.run(
        [sys.executable, "-m", "core.cli", "stage=evaluate", f"++evaluate.sae={tmp_path / 'sae'}",
         f"++data.root={tmp_path / 'store'}", f"hydra.run.dir={run_dir}"],
        capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parent.parent)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("sparsescope: error:")]
    assert len(errors) == 1
    if damage == "sae_shape":
        assert "sae_weights.safetensors" in errors[0] and "'W_enc'" in errors[0]
        assert "[8, 16]" in errors[0] and "[8, 32]" in errors[0] and "fix:" in proc.stderr
    else:
        assert str(shard) in errors[0]
        assert ("checksum" if damage == "checksum" else "NaN or inf") in errors[0]
        assert "fix: delete" in proc.stderr and "harvest" in proc.stderr
    assert not (run_dir / "results.json").exists() and not (run_dir / "metrics.json").exists()
