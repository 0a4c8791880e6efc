"""`nnlab predict RUN DIR/ --csv OUT.csv`: a folder of images predicted in batches into one CSV."""
from __future__ import annotations

import csv
import json

import torch

from nnlab.data.images import save_image
from nnlab.kinds.image import predict
from conftest import run_cli


def write_squares(folder, n):
    """``n`` PNGs of the square data's classes (class k: a bright square at spot k), named by index and class."""
    folder.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(0)
    for i in range(n):
        k = i % 10
        image = torch.randint(0, 40, (1, 28, 28), dtype=torch.uint8, generator=gen)
        r, c = divmod(k, 5)
        image[:, 4 + 10 * r:12 + 10 * r, 1 + 5 * c:6 + 5 * c] = 220
        save_image(image, (folder / f"{k}" if i % 2 else folder) / f"{i:03d}.png")
    return folder


def test_a_folder_is_predicted_in_batches_into_one_csv_with_every_class(image_run, tmp_path, capsys):
    folder = write_squares(tmp_path / "images", 250)  # eval_batch_size 100: three batches, the last short
    (folder / "notes.txt").write_text("not an image")
    code, out, err = run_cli(capsys, "predict", str(image_run), str(folder), "--csv", str(tmp_path / "out.csv"),
                             "--invert", "no", "--json")
    assert code == 0, err
    result = json.loads(out)
    rows = list(csv.DictReader(open(tmp_path / "out.csv", encoding="utf-8")))
    classes = json.loads((image_run / "summary.json").read_text())["classes"]
    assert result["rows"] == len(rows) == 250 and sum(result["predicted_counts"].values()) == 250
    assert list(rows[0]) == ["file", "predicted", *(f"probability_{c}" for c in classes)]
    assert sorted(r["file"] for r in rows) == [r["file"] for r in rows]  # sorted, subfolders included
    one = next(r for r in rows if r["file"].endswith("/007.png"))
    assert abs(sum(float(one[f"probability_{c}"]) for c in classes) - 1) < 1e-4
    # The same images one by one give the same probabilities as the batched CSV.
    single = predict(image_run, [one["file"]], top_k=1, invert="no")[0]["top"][0]
    assert single["class"] == one["predicted"] and abs(single["probability"] - float(one[f"probability_{one['predicted']}"])) < 1e-5
    labels = [int(r["file"].split("/")[-1][:3]) % 10 for r in rows]
    accuracy = sum(classes[k] == r["predicted"] for k, r in zip(labels, rows)) / len(rows)
    assert accuracy > 0.5  # the run learned the squares: the rows belong to their files


def test_folder_without_images_and_csv_over_an_input_are_clear_errors(image_run, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run_cli(capsys, "predict", str(image_run), str(empty), "--csv", str(tmp_path / "out.csv"))
    assert code == 2 and "empty: a folder with no image files" in err
    image = write_squares(tmp_path / "one", 1) / "000.png"
    code, _, err = run_cli(capsys, "predict", str(image_run), str(image), "--csv", str(image))
    assert code == 2 and "is the input file" in err and image.stat().st_size > 100
    assert not (tmp_path / "out.csv").exists()


def test_predict_without_csv_takes_folders_too(image_run, tmp_path):
    folder = write_squares(tmp_path / "images", 3)
    results = predict(image_run, [folder, folder / "000.png"], top_k=2, invert="no")
    assert [r["file"] for r in results] == [str(folder / "000.png"), str(folder / "002.png"), str(folder / "1" / "001.png"),
                                            str(folder / "000.png")]
    assert all(len(r["top"]) == 2 for r in results)
