"""Translation runs (issue 16): pairs files, the date task, the attention encoder-decoder, decoding, the CLI."""
import datetime
import http.server
import io
import json
import threading
import zipfile

import pytest
import torch

from conftest import assert_same_run, run_cli
from nnlab.data.translation import (EOS, PAD, PairBatches, PairFilter, TUTORIAL_PREFIXES, build_vocab, date_pairs,
                                    encode_pairs, fetch_eng_fra, normalize, read_pairs)
from nnlab.errors import DataError
from nnlab.kinds.translate import corpus_scores, translate
from nnlab.models.seq2seq import seq2seq
from nnlab.recipes import train

# A tiny generated word task: each source word has one target word, so word order must be kept.
LEXICON = {"un": "one", "deux": "two", "trois": "three", "quatre": "four", "cinq": "five", "six": "six"}
TINY = ["--set", "pairs=240", "--set", "hidden_size=16", "--set", "embed=8", "--set", "eval_batch_size=64",
        "--batch-size", "32", "--threads", "1"]


def word_pairs_file(path, n=200, seed=0):
    """``n`` lines ``FRENCH<TAB>ENGLISH<TAB>attribution`` of 1-4 number words."""
    rng = torch.Generator().manual_seed(seed)
    words = list(LEXICON)
    lines = []
    for _ in range(n):
        k = int(torch.randint(1, 5, (1,), generator=rng))
        chosen = [words[int(i)] for i in torch.randint(0, len(words), (k,), generator=rng)]
        english = " ".join(LEXICON[w] for w in chosen)
        lines.append(f"{' '.join(chosen).capitalize()} !\t{english} !\tCC-BY #{len(lines)}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_normalize_is_the_tutorials():
    assert normalize("  Je suis contente, vraiment!  ") == "je suis contente vraiment !"
    assert normalize("Ça va? Très bien.") == "ca va ? tres bien ."
    assert normalize("I'm 20.") == "i m ."


def test_read_pairs_ignores_further_columns_and_filters_like_the_tutorial(tmp_path):
    path = tmp_path / "eng-fra.txt"
    path.write_text("I'm happy.\tJe suis heureux.\tCC-BY 2.0 #1\n"
                    "Go.\tVa !\tCC-BY 2.0 #2\n\n"
                    "He is a very very very very very tall man.\tC'est un homme tres tres grand.\tCC #3\n",
                    encoding="utf-8")
    assert read_pairs(path, 1, 0) == [("je suis heureux .", "i m happy ."), ("va !", "go ."),
                                      ("c est un homme tres tres grand .",
                                       "he is a very very very very very tall man .")]
    keep = PairFilter(max_length=10, prefixes=TUTORIAL_PREFIXES)
    assert read_pairs(path, 1, 0, keep=keep) == [("je suis heureux .", "i m happy .")]


@pytest.mark.parametrize("content, message", [
    (b"Go.\tVa !\nHi. Salut !\n", "line 2: no tab"),
    (b"Go.\tVa !\n\t!?\n", "line 2: empty source side"),
    (b"Go.\tVa !\nHi.\t \n", "line 2: empty target side"),
    (b"Go.\tVa !\nCaf\xe9.\tCaf\xe9.\n", "line 2: not UTF-8"),
])
def test_bad_pairs_file_names_the_file_and_line(tmp_path, content, message):
    path = tmp_path / "pairs.tsv"
    path.write_bytes(content)
    with pytest.raises(DataError, match=f"pairs.tsv: {message}"):
        read_pairs(path)


def test_date_pairs_are_distinct_true_and_reproducible():
    pairs = date_pairs(3000, seed=1)
    assert pairs == date_pairs(3000, seed=1) != date_pairs(3000, seed=2)
    assert len({s for s, _ in pairs}) == 3000
    for source, iso in pairs:
        day = datetime.date.fromisoformat(iso)
        assert 1950 <= day.year <= 2049
        if "," in source and source.split(",")[0] in ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday",
                                                      "Saturday", "Sunday"):
            assert source.startswith(day.strftime("%A"))  # the weekday written is the date's
    formats = {"/" in s for s, _ in pairs} | {"." in s for s, _ in pairs} | {" of " in s for s, _ in pairs}
    assert formats == {True, False}


def tiny_batch(attention, n=6, **kwargs):
    pairs = [(list(s), list(t)) for s, t in date_pairs(n)]
    sv, tv = build_vocab(s for s, _ in pairs), build_vocab(t for _, t in pairs)
    torch.manual_seed(0)
    model = seq2seq(n_source=len(sv), n_target=len(tv), embed=8, hidden=16, attention=attention, **kwargs).eval()
    batch, target = next(iter(PairBatches(*encode_pairs(pairs, sv, tv), n)))
    return model, batch, target


@pytest.mark.parametrize("attention", ["bahdanau", "luong"])
def test_attention_sums_to_one_over_real_tokens_and_ignores_padding(attention):
    model, batch, _ = tiny_batch(attention, dropout=0.0)
    ids, weights = model.greedy(batch.source, batch.lengths, 8)
    real = batch.source != PAD
    assert torch.allclose(weights.sum(-1), torch.ones(weights.shape[:2]), atol=1e-5)
    assert (weights.masked_select(~real.unsqueeze(1).expand_as(weights)) == 0).all()
    # The shortest source decoded alone (no padding) gives the same words and weights.
    i = int(batch.lengths.argmin())
    alone_ids, alone_weights = model.greedy(batch.source[i:i + 1, :batch.lengths[i]], batch.lengths[i:i + 1], 8)
    steps = alone_ids.shape[1]
    assert torch.equal(alone_ids[0], ids[i, :steps])
    assert torch.allclose(alone_weights[0], weights[i, :steps, :batch.lengths[i]], atol=1e-5)


def test_luong_parallel_decoder_equals_stepping_through_time():
    model, batch, _ = tiny_batch("luong", dropout=0.0)
    parallel = model(batch)
    memory, keys, mask, hidden = model.encode(batch.source, batch.lengths)
    steps = []
    for t in range(batch.target_in.shape[1]):
        logits, hidden, _ = model.decoder.step(batch.target_in[:, t:t + 1], hidden, memory, keys, mask)
        steps.append(logits)
    assert torch.allclose(parallel, torch.cat(steps, 1), atol=1e-5)


@pytest.mark.parametrize("attention", ["bahdanau", "luong"])
def test_beam_of_one_is_greedy_and_wider_beams_end_in_eos(attention):
    model, batch, _ = tiny_batch(attention)
    greedy, _ = model.greedy(batch.source, batch.lengths, 12)
    beam1, _ = model.beam_search(batch.source, batch.lengths, 12, beam=1)
    assert torch.equal(beam1[:, :greedy.shape[1]], greedy)
    wide, weights = model.beam_search(batch.source, batch.lengths, 12, beam=4)
    assert wide.shape[:2] == weights.shape[:2]
    assert torch.allclose(weights.sum(-1), torch.ones(weights.shape[:2]), atol=1e-5)


def test_teacher_forcing_below_one_feeds_predictions_in_training_only():
    model, batch, target = tiny_batch("bahdanau", dropout=0.0, teacher_forcing=0.0)
    forced = model.eval()(batch)
    torch.manual_seed(0)
    free = model.train()(batch)
    assert torch.allclose(forced[:, 0], free[:, 0], atol=1e-6)  # the first step always sees <sos>
    assert not torch.allclose(forced, free)
    free.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_corpus_scores_use_sacrebleu():
    perfect = corpus_scores(["the cat sat on the mat ."], ["the cat sat on the mat ."])
    assert perfect == {"bleu": 100.0, "chrf": 100.0, "exact_match": 1.0}
    half = corpus_scores(["1999-03-03", "2001-01-02"], ["1999-03-03", "2001-01-01"])
    assert half["exact_match"] == 0.5 and 0 < half["chrf"] < 100


def test_translate_run_on_a_pairs_file_end_to_end(tmp_path, capsys):
    """Ten epochs on 200 pairs of number words (about 2 s): 99% of the file's pairs translated exactly
    and all 20 held-out ones when measured; the thresholds leave room, a broken decoder gets none."""
    data = word_pairs_file(tmp_path / "numbers.tsv")
    run = tmp_path / "run"
    code, out, err = run_cli(capsys, "train", "translate", "--data", str(data), "--set", "source_column=0",
                             "--set", "target_column=1", "--epochs", "10", "--lr", "1e-2", "--out", str(run),
                             "--set", "beam=3", "--json", "--set", "hidden_size=64", "--set", "embed=16",
                             "--set", "dropout=0", "--set", "eval_batch_size=64", "--batch-size", "16",
                             "--threads", "1")
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["kind"] == "translate" and summary["pairs"]["test"] == 20
    assert summary["test_exact_match"] >= 0.7 and summary["test_beam_exact_match"] >= 0.7
    assert summary["test_bleu"] > 50 and summary["test_beam_bleu"] > 50
    assert summary["examples"][0]["reference"] == summary["examples"][0]["reference"].lower()
    assert (run / "attention.png").stat().st_size > 1000
    pairs = [line.split("\t")[:2] for line in data.read_text(encoding="utf-8").splitlines()]
    translated = translate(run, [source for source, _ in pairs])
    exact = sum(t["translation"] == target.lower() for t, (_, target) in zip(translated, pairs))
    assert exact >= 0.8 * len(pairs), [(t["translation"], target) for t, (_, target) in zip(translated, pairs)][:10]
    code, out, err = run_cli(capsys, "translate", str(run), "Deux trois !", "--beam", "3",
                             "--attention", str(tmp_path / "a.png"), "--json")
    assert code == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result[0]["source"] == "Deux trois !" and result[0]["translation"] == "two three !"
    assert (tmp_path / "a.png").stat().st_size > 1000
    code, out, err = run_cli(capsys, "eval", str(run), "--json")
    assert code == 0, err
    assert json.loads(out.strip().splitlines()[-1])["test_bleu"] == summary["test_bleu"]


def test_translate_refuses_a_zero_beam_and_a_sentence_of_unknown_words(tmp_path, capsys):
    data = word_pairs_file(tmp_path / "numbers.tsv", n=60)
    run = tmp_path / "run"
    assert run_cli(capsys, "train", "translate", "--data", str(data), "--dry-run", "--out", str(run), *TINY[2:])[0] == 0
    for args, message in ((["un", "--beam", "0"], "--beam must be at least 1"),
                          (["zorglub blip"], "only words the run never saw")):
        code, out, err = run_cli(capsys, "translate", str(run), *args)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_bad_pairs_file_is_one_line_and_exit_2(tmp_path, capsys):
    data = tmp_path / "bad.tsv"
    data.write_text("Go.\tVa !\nno tab here\n", encoding="utf-8")
    code, out, err = run_cli(capsys, "train", "translate", "--data", str(data), "--out", str(tmp_path / "run"))
    assert code == 2 and "bad.tsv: line 2: no tab" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_dates_run_stops_and_resumes_exactly(tmp_path):
    overrides = {"pairs": 240, "hidden_size": 16, "embed": 8, "epochs": 2, "time_budget": None, "batch_size": 32,
                 "threads": 1,
                 "eval_batch_size": 64, "teacher_forcing": 0.5, "dropout": 0.1}
    train("translate-dates", out=tmp_path / "whole", overrides=overrides)
    cut = train("translate-dates", out=tmp_path / "cut", overrides={**overrides, "stop_after_epochs": 1})
    assert cut["stopped_after_epochs"] == 1
    train(resume=tmp_path / "cut")
    assert_same_run(tmp_path / "cut", tmp_path / "whole")


def serve_bytes(payload):
    """A local HTTP server that answers every GET with ``payload``; returns (server, url)."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/data.zip"


def zipped(members):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as handle:
        for name, text in members.items():
            handle.writestr(name, text)
    return buffer.getvalue()


def test_eng_fra_download_checks_structure_and_size_then_extracts(tmp_path):
    text = "".join(f"Go {i}.\tVa {i} !\tCC-BY #{i}\n" for i in range(300))
    server, url = serve_bytes(zipped({"data/eng-fra.txt": text}))
    try:
        result = fetch_eng_fra(tmp_path / "good", url=url, progress=False, min_pairs=300, min_bytes=1000)
        assert result["pairs"] == 300 and result["downloaded"] and "no checksum" in result["check"]
        assert (tmp_path / "good" / "eng-fra.txt").read_text(encoding="utf-8") == text
        again = fetch_eng_fra(tmp_path / "good", url=url, progress=False, min_pairs=300, min_bytes=1000)
        assert not again["downloaded"]
        with pytest.raises(DataError, match="expected at least 1000 bytes and 301 pairs"):
            fetch_eng_fra(tmp_path / "small", url=url, progress=False, min_pairs=301, min_bytes=1000)
        assert not (tmp_path / "small" / "eng-fra.txt").exists()
    finally:
        server.shutdown()
    server, url = serve_bytes(zipped({"data/other.txt": text}))
    try:
        with pytest.raises(DataError, match="not the tutorial's data.zip"):
            fetch_eng_fra(tmp_path / "wrong", url=url, progress=False)
        assert not (tmp_path / "wrong" / "data.zip").exists()
    finally:
        server.shutdown()


@pytest.mark.slow
def test_dates_recipe_learns_the_held_out_dates_in_three_epochs(tmp_path):
    # A fixed number of epochs, not the recipe's time budget: a wall-clock budget on a loaded machine
    # measured the load (0.2% exact match under load 8), not the model; speed is in benchmarks/.
    # 5,000 pairs, 3 epochs at lr 0.015 (117 steps): 96.6-99.0% over seeds 0-3 in ~11 s alone; the
    # recipe's lr 0.005 needed 6,000 pairs x 4 epochs (21 s) for the same.
    summary = train("translate-dates", out=tmp_path / "run",
                    overrides={"pairs": 5000, "time_budget": None, "epochs": 3, "lr": 0.015, "threads": 1, "beam": 1})
    assert summary["test_exact_match"] >= 0.9, summary["examples"]
