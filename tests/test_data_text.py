"""GPT-2 tokenisation from local BPE files, token windows, WikiText-2, local text files, Recycling the Web."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import harness.data as data
from backends.spec.rng import split_indices
from harness.data import text, tokenizer
from tests.data_fixtures import SHARED_DATA, isolate

GPT2_DIR = SHARED_DATA / "gpt2"
WIKITEXT_DIR = SHARED_DATA / "wikitext-2"


@pytest.fixture(autouse=True)
def cache(monkeypatch, tmp_path):
    cache = isolate(monkeypatch, tmp_path)

    def offline():
        raise OSError("offline in tests")

    monkeypatch.setattr(tokenizer, "tiktoken_fallback", offline)
    return cache


@pytest.fixture
def gpt2_dir(monkeypatch):
    if not (GPT2_DIR / "encoder.json").is_file():
        pytest.skip(f"the GPT-2 BPE files are not at {GPT2_DIR}")
    monkeypatch.setenv("DYNAMOE_GPT2_DIR", str(GPT2_DIR))
    return GPT2_DIR


@pytest.fixture
def wikitext_dir():
    if not (WIKITEXT_DIR / "valid.txt").is_file():
        pytest.skip(f"WikiText-2 is not at {WIKITEXT_DIR}")
    return WIKITEXT_DIR


def test_windows_are_non_overlapping_and_shifted():
    tokens = np.arange(3 * 129 + 50)
    w = text.windows(tokens)
    assert w.shape == (3, 129) and w.dtype == np.int64
    np.testing.assert_array_equal(w.ravel(), np.arange(3 * 129))  # consecutive, no overlap, tail dropped


def test_local_bpe_files_build_tiktokens_gpt2(gpt2_dir):
    encoding, source = tokenizer.gpt2()
    assert str(gpt2_dir / "encoder.json") in source
    assert encoding.n_vocab == 50257 and encoding.eot_token == 50256
    assert encoding.encode("Hello world") == [15496, 995]
    assert encoding.encode("<|endoftext|>", allowed_special="all") == [50256]
    assert encoding.decode(encoding.encode(" DynaMoE routes tokens.")) == " DynaMoE routes tokens."


def test_gpt2_found_under_data_dir(tmp_path, monkeypatch):
    if not (GPT2_DIR / "encoder.json").is_file():
        pytest.skip(f"the GPT-2 BPE files are not at {GPT2_DIR}")
    shutil.copytree(GPT2_DIR, tmp_path / "d" / "gpt2")
    located = data.locate("gpt2", tmp_path / "d")
    assert located.status == "ok" and located.directories == (tmp_path / "d" / "gpt2",)


def test_tampered_bpe_file_is_rejected(tmp_path, monkeypatch):
    if not (GPT2_DIR / "encoder.json").is_file():
        pytest.skip(f"the GPT-2 BPE files are not at {GPT2_DIR}")
    shutil.copytree(GPT2_DIR, tmp_path / "gpt2")
    vocab = tmp_path / "gpt2" / "vocab.bpe"
    vocab.write_bytes(vocab.read_bytes()[:-10])
    monkeypatch.setenv("DYNAMOE_GPT2_DIR", str(tmp_path / "gpt2"))
    with pytest.raises(data.ChecksumMismatch) as info:
        tokenizer.gpt2()
    assert str(vocab) in str(info.value)
    assert "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5" in str(info.value)


def test_no_tokenizer_anywhere_is_a_clear_error():
    with pytest.raises(data.DatasetNotFound, match="encoder.json, vocab.bpe") as info:
        tokenizer.gpt2()
    assert "offline in tests" in str(info.value) and "python -m harness data fetch gpt2" in str(info.value)


def test_wikitext2_here_trains_on_valid_and_tests_on_test(gpt2_dir, wikitext_dir):
    ds = data.load("wikitext2", data_dir=wikitext_dir.parent)
    assert (ds.task, ds.input_dim, ds.num_classes) == ("lm", 128, 50257)
    assert ds.x_train.shape == ds.y_train.shape == (1000, 128)
    assert ds.x_test.shape == ds.y_test.shape == (1000, 128)
    assert ds.x_train.dtype == ds.y_train.dtype == np.int64
    assert 0 <= ds.x_train.min() and ds.x_train.max() < 50257
    np.testing.assert_array_equal(ds.x_train[:, 1:], ds.y_train[:, :-1])
    encoding, _ = tokenizer.gpt2()
    valid = np.asarray(encoding.encode_ordinary((wikitext_dir / "valid.txt").read_text("utf-8")))
    test = np.asarray(encoding.encode_ordinary((wikitext_dir / "test.txt").read_text("utf-8")))
    # Non-overlapping 129-token windows from the start of valid.txt.
    np.testing.assert_array_equal(ds.x_train[3], valid[3 * 129 : 3 * 129 + 128])
    np.testing.assert_array_equal(ds.y_train[3], valid[3 * 129 + 1 : 4 * 129])
    np.testing.assert_array_equal(ds.x_test[0], test[:128])
    assert "no training text here" in ds.notes and "from valid.txt" in ds.notes and "from test.txt" in ds.notes
    assert str(wikitext_dir / "valid.txt") in ds.source


def test_wikitext2_num_samples(gpt2_dir, wikitext_dir):
    ds = data.load("wikitext2", data_dir=wikitext_dir.parent, num_samples=7)
    assert ds.x_train.shape == (7, 128) and ds.x_test.shape == (1000, 128)


def test_wikitext2_corrupt_file(gpt2_dir, wikitext_dir, tmp_path):
    folder = tmp_path / "wikitext-2"
    shutil.copytree(wikitext_dir, folder)
    (folder / "test.txt").write_text("not the test split\n")
    with pytest.raises(data.ChecksumMismatch) as info:
        data.load("wikitext2", data_dir=tmp_path)
    assert str(folder / "test.txt") in str(info.value)
    assert "d790b833ef8cf03a90db7bf1271b7520b83c45ce07ba3c1a9699df81e239eca0" in str(info.value)


def test_wikitext2_with_a_train_file_uses_it(gpt2_dir, tmp_path):
    # Salesforce names have no known digest: "unchecked", but used.
    folder = tmp_path / "wikitext-2"
    folder.mkdir()
    for split in ("train", "valid", "test"):
        (folder / f"wiki.{split}.tokens").write_text(f" = {split} = \n" + f"the {split} words go on . " * 400)
    located = data.locate("wikitext2", tmp_path)
    assert located.status == "unchecked"
    ds = data.load("wikitext2", data_dir=tmp_path)
    encoding, _ = tokenizer.gpt2()
    assert encoding.decode(ds.x_train[0].tolist()).startswith(" = train =")
    assert encoding.decode(ds.x_test[0].tolist()).startswith(" = test =")
    assert "training windows from wiki.train.tokens" in ds.notes and "from wiki.test.tokens" in ds.notes


def test_text_file_split_90_10_with_the_seeded_split(gpt2_dir, tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("".join(f"Sentence number {i} of a small corpus.\n" for i in range(600)))
    ds = data.load(f"text:{path}", seed=3)
    encoding, _ = tokenizer.gpt2()
    all_windows = text.windows(encoding.encode_ordinary(path.read_text()))
    n = len(all_windows)
    kept, held = split_indices(3, n, n // 10)
    np.testing.assert_array_equal(ds.x_train, all_windows[kept][:, :-1])
    np.testing.assert_array_equal(ds.y_test, all_windows[held][:, 1:])
    assert len(ds.x_test) == n // 10 and len(ds.x_train) == n - n // 10
    other = data.load(f"text:{path}", seed=4)
    assert not np.array_equal(other.x_test, ds.x_test)
    again = data.load(f"text:{path}", seed=3)
    np.testing.assert_array_equal(again.x_test, ds.x_test)
    assert "split_indices(seed=3" in ds.notes


def test_text_file_missing(tmp_path):
    with pytest.raises(data.DatasetNotFound, match="nope.txt"):
        data.load(f"text:{tmp_path / 'nope.txt'}")


def test_too_short_text(gpt2_dir, tmp_path):
    path = tmp_path / "short.txt"
    path.write_text("only a few tokens")
    with pytest.raises(data.DataError, match="too little text"):
        data.load(f"text:{path}")


def test_recycling_the_web_without_datasets_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(text, "hub_available", lambda: False)
    with pytest.raises(data.DatasetNotFound) as info:
        data.load("recycling_the_web_1k")
    message = str(info.value)
    assert "mlx-community/recycling_the_web-1k" in message and "pip install datasets" in message


def test_recycling_the_web_from_local_json_lines(gpt2_dir, tmp_path):
    folder = tmp_path / "recycling_the_web-1k"
    folder.mkdir()
    docs = [f"Document {i} talks about topic {i % 7} at some length." * 20 for i in range(40)]
    (folder / "train.jsonl").write_text("\n".join(json.dumps({"text": d}) for d in docs[:36]) + "\n")
    (folder / "valid.jsonl").write_text("\n".join(json.dumps({"text": d}) for d in docs[36:]) + "\n")
    ds = data.load("recycling_the_web_1k", data_dir=tmp_path)
    encoding, _ = tokenizer.gpt2()
    stream = np.concatenate([encoding.encode_ordinary(d) + [50256] for d in docs[:36]])
    np.testing.assert_array_equal(ds.x_train[0], stream[:128])
    assert len(ds.x_train) == len(stream) // 129
    assert "'valid' split" in ds.notes
    assert 50256 in ds.x_train  # documents are separated by <|endoftext|>
