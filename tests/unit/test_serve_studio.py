"""The studio's endpoints of nnlab serve: Grad-CAM, attention, sampling (streamed), translation, the
runs of a folder, and each one's bad inputs (bad upload, too large, unknown run, wrong kind)."""
import asyncio
import io
import json
import math
import re
import shutil

import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from nnlab.cli import build_parser
from nnlab.commands import studio
from nnlab.commands.serve import UploadRejected, create_app
from nnlab.commands.studio import Bounded
from nnlab.config import load_config
from nnlab.data.idx import read_idx
from nnlab.errors import ConfigError
from nnlab.kinds.translate import translate
from nnlab.recipes import train

CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
TEXT = "".join(f"the {w} sat on the mat. " for w in ("cat", "dog", "bat", "rat", "hen")) * 60


def png(pixels) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def runs(tmp_path_factory, image_run, one_thread):
    """A folder of runs: the shared image run, a names run pooling by attention, a char LM, a tiny
    translator, a name generator and an interrupted char LM (about 4 s in all)."""
    base = tmp_path_factory.mktemp("studio-runs")
    folder = base / "runs"
    shutil.copytree(image_run, folder / "squares")
    names = base / "names-data"
    names.mkdir()
    gen = torch.Generator().manual_seed(0)
    stems = ["".join("bcdfgklmnprstvz"[i] for i in row).capitalize()
             for row in torch.randint(15, (300, 4), generator=gen).tolist()]
    (names / "Ovian.txt").write_text("\n".join(s + "ov" for s in stems[:150]), encoding="utf-8")
    (names / "Inian.txt").write_text("\n".join(s + "ini" for s in stems[150:]), encoding="utf-8")
    def tiny(recipe, out, **overrides):
        train(recipe, out=folder / out, stream=io.StringIO(),
              overrides={"threads": 1, "tensorboard": False, "plots": False, **overrides})

    tiny("names-rnn", "names", data=str(names), epochs=4, hidden_size=16, embed=8, batch_size=32, lr=1e-2,
         pooling="attention", dropout=0.0, label_smoothing=0.0)
    text = base / "text.txt"
    text.write_text(TEXT, encoding="utf-8")
    lm = {"data": str(text), "layers": 1, "hidden_size": 16, "embed": 8, "bptt": 16, "batch_size": 8, "eval_batch_size": 4}
    tiny("shakespeare-lstm", "lm", **lm, epochs=1)
    tiny("shakespeare-lstm", "sweep/cut", **lm, epochs=2, stop_after_epochs=1, lr=1e-3)
    tiny("translate-dates", "dates", pairs=300, epochs=1, time_budget=None, hidden_size=8, embed=4)
    tiny("names-generate", "namegen", data=str(names), epochs=1, hidden_size=8, embed=4, category_embed=2)
    return folder


@pytest.fixture(scope="module")
def client(runs):
    served = [runs / name for name in ("squares", "names", "lm", "dates", "namegen")]
    with TestClient(create_app(served, device="cpu", max_bytes=200_000, runs_root=runs)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def sneaker(image_run):
    """A real test image of the square data (label 7, Sneaker) as PNG bytes."""
    data = load_config(image_run / "config.json").data
    return png(read_idx(f"{data}/t10k-images-idx3-ubyte.gz")[7])


def detail(response) -> str:
    return json.dumps(response.json()["detail"])


def test_models_say_what_each_kind_can_do_from_the_table_of_kinds(client):
    info = {m["name"]: m for m in client.get("/models").json()}
    assert {name: m["features"] for name, m in info.items()} == {
        "squares": ["serve", "cam"], "names": ["serve"], "lm": ["sample"], "dates": ["translate"],
        "namegen": ["sample"]}
    assert info["names"]["attention"] is True and info["squares"]["input_shape"] == [1, 28, 28]
    assert info["namegen"]["sample_options"] == ["category", "start", "count"] and info["lm"]["sample_options"] == []
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/cam/{model}", "/sample/{model}", "/translate/{model}", "/runs", "/runs/{name}", "/compare"} <= set(paths)
    body = paths["/sample/{model}"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["properties"]["length"]["maximum"] == studio.MAX_SAMPLE_LENGTH


def test_page_and_its_files_come_from_the_server_with_a_strict_policy(client):
    page = client.get("/")
    assert 'id="canvas"' in page.text and "/static/studio.js" in page.text and "http" not in page.text.split("<body")[0]
    assert "unsafe-inline" not in page.headers["content-security-policy"]
    script = client.get("/static/studio.js")
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    # nothing fetched from elsewhere: the one URL is SVG's namespace name
    assert set(re.findall(r"https?://[^\"'`) ]+", script.text)) == {"http://www.w3.org/2000/svg"}
    assert client.get("/static/studio.css").headers["content-type"].startswith("text/css")
    assert client.get("/static/..%2Fserve.py").status_code == 404
    assert client.get("/static/index.html").status_code == 404  # only the listed files


def test_cam_draws_the_top_class_and_any_class_asked_for(client, sneaker):
    top = client.post("/predict/squares", files={"file": ("s.png", sneaker, "image/png")}).json()["top"][0]["class"]
    default = client.post("/cam/squares", files={"file": ("s.png", sneaker, "image/png")})
    assert default.status_code == 200 and default.headers["content-type"] == "image/png"
    assert default.headers["x-class"] == default.headers["x-predicted"] == top == "Sneaker"
    other = client.post("/cam/squares", params={"class": "T-shirt/top"},
                        files={"file": ("s.png", sneaker, "image/png")})
    assert other.status_code == 200 and other.headers["x-class"] == "T-shirt%2Ftop"
    assert float(other.headers["x-probability"]) < float(default.headers["x-probability"])
    with Image.open(io.BytesIO(default.content)) as a, Image.open(io.BytesIO(other.content)) as b:
        assert a.size == b.size and a.width > 300
        assert a.tobytes() != b.tobytes()  # another class, another map


def _bomb() -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (5000, 5000)).save(buffer, format="PNG")
    return buffer.getvalue()


CAM_CASES = [
    ("not an image", "squares", {"files": {"file": ("a.png", b"hello", "image/png")}}, 415, "not an image"),
    ("empty file", "squares", {"files": {"file": ("e.png", b"", "image/png")}}, 400, "file is empty"),
    ("missing field", "squares", {"files": {"other": ("a.png", b"x", "image/png")}}, 422, "field 'file'"),
    ("json body", "squares", {"json": {"file": "/etc/passwd"}}, 415, "multipart/form-data"),
    ("too large", "squares", {"content": b"x" * 300_000,
                              "headers": {"content-type": "multipart/form-data; boundary=zz"}}, 413, "exceeds the limit"),
    ("too many pixels", "squares", {"files": {"file": ("b.png", "BOMB", "image/png")}}, 413, "5000x5000 pixels"),
    ("unknown class", "squares", {"files": {"file": ("s.png", "GOOD", "image/png")}, "params": {"class": "Cat"}},
     422, "not a class of model 'squares'"),
    ("unknown model", "nope", {"files": {"file": ("s.png", "GOOD", "image/png")}}, 404, "no model named 'nope'"),
    ("wrong kind", "names", {"files": {"file": ("s.png", "GOOD", "image/png")}}, 422,
     "is a names run; /cam takes: image run"),
]


@pytest.mark.parametrize("case, model, request_args, status, message", CAM_CASES, ids=[c[0] for c in CAM_CASES])
def test_cam_bad_requests_get_a_4xx_naming_the_problem(client, sneaker, case, model, request_args, status, message):
    files = request_args.get("files")
    if files:
        field, (name, data, content_type) = next(iter(files.items()))
        data = {"GOOD": sneaker, "BOMB": _bomb()}.get(data, data) if isinstance(data, str) else data
        request_args = {**request_args, "files": {field: (name, data, content_type)}}
    response = client.post(f"/cam/{model}", **request_args)
    assert response.status_code == status and message in detail(response), response.text


def test_bounded_work_answers_503_past_its_queue_and_its_timeout():
    async def scenario():
        gate = Bounded("test", timeout=5.0, workers=1, queue=2)
        slow = [asyncio.create_task(gate.run(__import__("time").sleep, 0.3)) for _ in range(3)]
        outcomes = await asyncio.gather(*slow, return_exceptions=True)
        late = Bounded("test", timeout=0.05, workers=1, queue=2)
        with pytest.raises(UploadRejected, match="took longer than 0.05 s") as timed_out:
            await late.run(__import__("time").sleep, 0.3)
        return outcomes, timed_out.value.status
    outcomes, timeout_status = asyncio.run(scenario())
    refused = [o for o in outcomes if isinstance(o, UploadRejected)]
    assert len(refused) == 1 and refused[0].status == 503 and "2 test requests queued" in refused[0].detail
    assert timeout_status == 503


def test_names_predictions_carry_each_letters_attention(client):
    response = client.post("/predict/names", json={"inputs": ["Petrov", "Bellini"]}, params={"top_k": 2})
    assert response.status_code == 200, response.text
    petrov, bellini = response.json()["results"]
    assert petrov["top"][0]["class"] == "Ovian" and bellini["top"][0]["class"] == "Inian"
    assert [a["token"] for a in petrov["attention"]] == list("Petrov")
    for result in (petrov, bellini):
        assert sum(a["weight"] for a in result["attention"]) == pytest.approx(1.0, abs=1e-3)


def test_sample_streams_text_that_starts_with_the_prime(client):
    with client.stream("POST", "/sample/lm", json={"prime": "the ", "length": 150, "seed": 3}) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
        chunks = list(response.iter_text())
    text = "".join(chunks)
    assert text.startswith("the ") and len(text) == 4 + 150
    assert len(chunks) >= 3  # 150 characters in pieces of SAMPLE_CHUNK: sent as they are drawn
    again = client.post("/sample/lm", json={"prime": "the ", "length": 150, "seed": 3}).text
    other = client.post("/sample/lm", json={"prime": "the ", "length": 150, "seed": 4}).text
    assert again == text != other


def test_a_name_generator_samples_names_of_the_language_in_one_piece(client):
    response = client.post("/sample/namegen", json={"category": "Inian", "count": 5, "seed": 1})
    assert response.status_code == 200, response.text
    assert len(response.text.split("\n")) == 5
    missing = client.post("/sample/namegen", json={"count": 5})
    assert missing.status_code == 422 and "Ovian" in detail(missing)


SAMPLE_CASES = [
    ("prime outside the vocabulary", "lm", {"json": {"prime": "€uro"}}, 422, "not in the model's vocabulary"),
    ("temperature zero", "lm", {"json": {"temperature": 0}}, 422, "temperature"),
    ("too long", "lm", {"json": {"length": 10**6}}, 422, "length"),
    ("unknown field", "lm", {"json": {"lenght": 5}}, 422, "lenght"),
    ("option of another kind", "lm", {"json": {"category": "Ovian"}}, 422, "category: does not apply"),
    ("not an object", "lm", {"json": ["the"]}, 422, "body"),
    ("malformed json", "lm", {"content": b"{no", "headers": {"content-type": "application/json"}}, 400, "malformed"),
    ("form body", "lm", {"data": {"prime": "a"}}, 415, "application/json"),
    ("too large", "lm", {"content": b"x" * 300_000, "headers": {"content-type": "application/json"}}, 413, "limit"),
    ("unknown model", "nope", {"json": {}}, 404, "no model named 'nope'"),
    ("wrong kind", "squares", {"json": {}}, 422, "is a image run; /sample takes: char-RNN run"),
]


@pytest.mark.parametrize("case, model, request_args, status, message", SAMPLE_CASES, ids=[c[0] for c in SAMPLE_CASES])
def test_sample_bad_requests_get_a_4xx_naming_the_problem(client, case, model, request_args, status, message):
    response = client.post(f"/sample/{model}", **request_args)
    assert response.status_code == status and message in detail(response), response.text


def test_translation_comes_with_its_attention_matrix(client, runs):
    """The served translations are the run's own (``translate``'s, whose quality test_translate checks:
    this run is trained for a second, to be served), each with the attention of that same decoding."""
    sources = ["3 March 1999", "july 4 2001"]
    response = client.post("/translate/dates", json={"inputs": sources, "beam": 2})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["source"] for r in results] == sources
    expected = translate(runs / "dates", sources, beam=2)
    assert [r["translation"] for r in results] == [e["translation"] for e in expected]
    for r in results:
        attention = r["attention"]
        assert r["beam"] == 2 and "".join(attention["output"]).replace("\u2423", " ") == r["translation"]
        assert len(attention["weights"]) == len(attention["output"])
        assert all(len(row) == len(attention["source"]) for row in attention["weights"])
        assert all(sum(row) == pytest.approx(1.0, abs=1e-2) for row in attention["weights"])
    assert "".join(results[0]["attention"]["source"]) == "3\u2423March\u24231999"


TRANSLATE_CASES = [
    ("no inputs", "dates", {"json": {"inputs": []}}, 422, "non-empty list of strings"),
    ("too many", "dates", {"json": {"inputs": ["1 may 2000"] * 40}}, 413, "at most 32 inputs"),
    ("beam zero", "dates", {"json": {"inputs": ["1 may 2000"], "beam": 0}}, 422, "beam"),
    ("nothing readable", "dates", {"json": {"inputs": ["\u20ac\u20ac"]}}, 422, "never saw in training"),
    ("wrong kind", "lm", {"json": {"inputs": ["a"]}}, 422, "/translate takes: translation run"),
    ("unknown model", "nope", {"json": {"inputs": ["a"]}}, 404, "no model named"),
]


@pytest.mark.parametrize("case, model, request_args, status, message", TRANSLATE_CASES,
                         ids=[c[0] for c in TRANSLATE_CASES])
def test_translate_bad_requests_get_a_4xx_naming_the_problem(client, case, model, request_args, status, message):
    response = client.post(f"/translate/{model}", **request_args)
    assert response.status_code == status and message in detail(response), response.text


def test_predict_on_a_model_that_only_samples_is_a_422(client):
    response = client.post("/predict/lm", json={"inputs": ["the"]})
    assert response.status_code == 422 and "is a char-RNN run; /predict takes: image run" in detail(response)


def test_runs_lists_the_folder_as_nnlab_runs_does_with_the_interrupted_one_marked(client):
    body = client.get("/runs").json()
    rows = {r["name"]: r for r in body["runs"]}
    assert set(rows) == {"squares", "names", "lm", "sweep/cut", "dates", "namegen"}
    assert rows["sweep/cut"]["status"] == "interrupted" and "nnlab train --resume" in rows["sweep/cut"]["why"]
    assert rows["squares"]["status"] == "finished" and rows["squares"]["metric"] == "test_accuracy"
    assert rows["squares"]["model"] == "squares" and rows["sweep/cut"]["model"] is None


def test_one_run_has_its_curves_scores_config_and_summary(client):
    run = client.get("/runs/squares").json()
    assert run["status"] == "finished" and run["config"]["recipe"] == "fashion-cnn"
    assert [row["epoch"] for row in run["metrics"]] == [1, 2] and "valid_acc" in run["metrics"][0]
    summary = run["summary"]
    assert len(summary["confusion"]) == 10 and set(summary["per_class"]) == set(CLASSES)
    nested = client.get("/runs/sweep/cut").json()
    assert nested["status"] == "interrupted" and nested["summary"] is None and len(nested["metrics"]) == 1


@pytest.mark.parametrize("name", ["nope", "..%2Fruns%2Fsquares", "%2e%2e/%2e%2e/etc/passwd", "squares%2F..%2Fnames",
                                  "%2Fetc%2Fpasswd", "squares/config.json"])
def test_runs_are_named_never_reached_by_a_path(client, name):
    response = client.get(f"/runs/{name}")
    assert response.status_code == 404, response.text


def test_a_diverged_run_is_still_valid_json(client, runs):
    path = runs / "names" / "metrics.jsonl"
    text = path.read_text()
    path.write_text(text + json.dumps({"epoch": 5, "train_loss": math.nan, "valid_loss": math.inf}) + "\n")
    try:
        rows = client.get("/runs/names").json()["metrics"]
    finally:
        path.write_text(text)
    assert rows[-1] == {"epoch": 5, "train_loss": None, "valid_loss": None}


def test_compare_gives_both_curves_and_the_settings_that_differ(client):
    body = client.get("/compare", params={"run": ["lm", "sweep/cut"]}).json()
    assert body["runs"] == ["lm", "sweep/cut"]
    assert body["differences"]["epochs"] == [1, 2] and body["differences"]["stop_after_epochs"] == [None, 1]
    assert len(body["metrics"]["lm"]) == 1 and body["results"]["sweep/cut"]["status"] == "interrupted"
    for params, status in [({"run": ["lm"]}, 422), ({"run": ["lm", "lm"]}, 422), ({"run": ["lm", "nope"]}, 404),
                           ({"run": [f"r{i}" for i in range(9)]}, 422), ({}, 422)]:
        assert client.get("/compare", params=params).status_code == status, params


def test_serving_only_a_folder_of_runs_and_startup_errors(runs, tmp_path, monkeypatch):
    with TestClient(create_app([], device="cpu", runs_root=runs)) as only_runs:
        assert only_runs.get("/models").json() == [] and len(only_runs.get("/runs").json()["runs"]) == 6
    with pytest.raises(ConfigError, match="--runs .*missing: not a directory"):
        create_app([], device="cpu", runs_root=tmp_path / "missing")
    monkeypatch.chdir(tmp_path)  # no runs/ here
    with pytest.raises(ConfigError, match="give run directories to serve, or --runs DIR"):
        create_app([], device="cpu")
    with TestClient(create_app([runs / "lm"], device="cpu")) as no_folder:
        assert no_folder.get("/runs").json() == {"root": None, "runs": []}
        assert no_folder.get("/runs/lm").status_code == 404
    args = build_parser().parse_args(["serve", "--runs", str(runs)])
    assert args.run_dirs == [] and args.runs == str(runs)
