"""zoo.Predictor and the ``zoo predict`` command."""

from __future__ import annotations

import os
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import helpers
import numpy as np
import pytest
import torch
from PIL import Image

from zoo import save_model
from zoo.cli import main
from zoo.cli.predict import find_images, output_names, resolve_palette
from zoo.data.io import read_image, to_rgb_uint8
from zoo.infer.predictor import Predictor

REPO = Path(__file__).resolve().parents[1]

CLASSES = ["background", "thing", "stuff"]
PALETTE = [[0, 0, 0], [200, 30, 30], [30, 200, 30]]


def tiny_model(num_classes: int = 3):
    """The suite's tiny model, with logits far from ties."""
    return helpers.decisive(helpers.tiny_model(num_classes=num_classes), num_classes)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    return save_model(tiny_model(), path, class_names=CLASSES, palette=PALETTE)


@pytest.fixture(scope="module")
def predictor(checkpoint: Path) -> Predictor:
    return Predictor.from_checkpoint(checkpoint)


def random_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_predict_matches_the_model(checkpoint: Path, predictor: Predictor) -> None:
    image = random_image(37, 50)
    mask = predictor.predict(image)
    assert mask.shape == (37, 50) and mask.dtype == np.uint8
    model = tiny_model().eval()
    model.load_state_dict(torch.load(checkpoint)["state_dict"])
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        expected = model(x).argmax(1)[0].numpy()
    np.testing.assert_array_equal(mask, expected)
    assert predictor.class_names == CLASSES
    assert predictor.palette == [tuple(c) for c in PALETTE]


def test_predict_batch_equals_predict(predictor: Predictor) -> None:
    images = [random_image(40, 33, 1), random_image(33, 40, 2), random_image(40, 33, 3)]
    masks = predictor.predict_batch(images)
    for image, mask in zip(images, masks, strict=True):
        np.testing.assert_array_equal(mask, predictor.predict(image))


def test_lightning_checkpoint_is_read(tmp_path: Path, checkpoint: Path, predictor: Predictor) -> None:
    saved = torch.load(checkpoint)
    lightning = {
        "state_dict": {f"model.{k}": v for k, v in saved["state_dict"].items()},
        "zoo": saved["zoo"],
        "global_step": 10,
        "optimizer_states": [],
    }
    torch.save(lightning, tmp_path / "last.ckpt")
    image = random_image(35, 45)
    np.testing.assert_array_equal(
        Predictor.from_checkpoint(tmp_path / "last.ckpt").predict(image), predictor.predict(image)
    )


def test_image_conversions() -> None:
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert to_rgb_uint8(gray).shape == (3, 4, 3)
    rgba = np.zeros((3, 4, 4), np.uint8)
    assert to_rgb_uint8(rgba).shape == (3, 4, 3)
    assert to_rgb_uint8(np.full((2, 2), 65535, np.uint16)).max() == 255
    with pytest.raises(ValueError, match=r"^image: dtype int64 is not an image's: give uint8 \(0..255\) or float"):
        to_rgb_uint8(np.zeros((2, 2, 3), np.int64))


def test_find_images_and_names(tmp_path: Path) -> None:
    for name in ("b.png", "a.jpg", "a.PNG", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    found = find_images(tmp_path)
    assert [p.name for p in found] == ["a.PNG", "a.jpg", "b.png"]
    assert output_names(found) == ["a_png", "a_jpg", "b"]
    assert find_images(str(tmp_path / "*.png")) == [tmp_path / "b.png"]
    with pytest.raises(FileNotFoundError, match="no file matches"):
        find_images(tmp_path / "missing*.jpg")


def test_palette_choice() -> None:
    assert resolve_palette("auto", 3, PALETTE) == [tuple(c) for c in PALETTE]
    assert resolve_palette("voc", 3, PALETTE)[1] == (128, 0, 0)
    assert resolve_palette("cityscapes", 20)[0] == (128, 64, 128) and len(resolve_palette("cityscapes", 20)) == 20
    assert resolve_palette("auto", 19)[0] == (128, 64, 128)


def write_inputs(folder: Path) -> dict[str, np.ndarray]:
    """Images of several kinds: RGB JPEG, RGBA, grayscale and 16-bit PNGs, a corrupt file."""
    folder.mkdir(parents=True, exist_ok=True)
    rgb = random_image(40, 52, 4)
    Image.fromarray(rgb).save(folder / "rgb.png")
    Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)])).save(folder / "rgba.png")
    Image.fromarray(rgb[..., 0]).save(folder / "gray.png")
    Image.fromarray(rgb[..., 1].astype(np.uint16) * 257).save(folder / "deep.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    return {"rgb": rgb}


def test_cli_writes_masks_and_counts_failures(
    tmp_path: Path, checkpoint: Path, predictor: Predictor, capsys: pytest.CaptureFixture[str]
) -> None:
    write_inputs(tmp_path / "in")
    code = main(["predict", "--checkpoint", str(checkpoint), "--input", str(tmp_path / "in"), "--output",
                 str(tmp_path / "out"), "--batch-size", "2"])  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 1
    assert "broken.jpg" in err
    assert "4 images, 1 failed" in out and "images/s" in out
    names = sorted(p.name for p in (tmp_path / "out" / "pred").iterdir())
    assert names == ["deep.png", "gray.png", "rgb.png", "rgba.png"]
    assert sorted(p.name for p in (tmp_path / "out" / "vis").iterdir()) == names
    for name in names:
        written = Image.open(tmp_path / "out" / "pred" / name)
        assert written.mode == "P"
        image = read_image(tmp_path / "in" / name)
        np.testing.assert_array_equal(np.array(written), predictor.predict(image))  # index PNG round trip
        assert written.getpalette()[3:6] == PALETTE[1]
        vis = np.array(Image.open(tmp_path / "out" / "vis" / name))
        assert vis.shape[0] > 40 and vis.shape[1:] == (52, 3)  # the overlay above a legend band
        assert (vis[40:] == 255).mean() > 0.5


def test_cli_applies_exif_orientation(tmp_path: Path, checkpoint: Path, predictor: Predictor) -> None:
    stored = random_image(40, 64, 5)  # stored as 64 wide, 40 high; Orientation 6 displays it rotated: 40 wide
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "rotated.jpg", exif=exif.tobytes(), quality=95)
    code = main(["predict", "--checkpoint", str(checkpoint), "--input", str(tmp_path / "rotated.jpg"), "--output",
                 str(tmp_path / "out"), "--opacity", "0.3"])  # fmt: skip
    assert code == 0
    mask = np.array(Image.open(tmp_path / "out" / "pred" / "rotated.png"))
    assert mask.shape == (64, 40)
    displayed = np.array(Image.open(tmp_path / "rotated.jpg").transpose(Image.Transpose.ROTATE_270))
    np.testing.assert_array_equal(mask, predictor.predict(displayed))
    vis = np.array(Image.open(tmp_path / "out" / "vis" / "rotated.png"))
    assert vis.shape[0] > 64 and vis.shape[1:] == (40, 3)  # displayed orientation, above the legend


def test_cli_tta_and_slide_options(tmp_path: Path, checkpoint: Path) -> None:
    Image.fromarray(random_image(45, 60, 6)).save(tmp_path / "x.png")
    code = main(["predict", "--checkpoint", str(checkpoint), "--input", str(tmp_path / "x.png"), "--output",
                 str(tmp_path / "out"), "--scales", "0.75", "1", "--flip", "--crop", "32", "32", "--stride", "24", "24",
                 "--palette", "voc"])  # fmt: skip
    assert code == 0
    assert np.array(Image.open(tmp_path / "out" / "pred" / "x.png")).shape == (45, 60)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--num-classes", "19"], "argument --num-classes: {ckpt} predicts 3 classes, expected 19"),
        (
            ["--classes", "a,b,c"],
            "argument --classes: {ckpt} has classes ['background', 'thing', 'stuff'], expected ['a', 'b', 'c']",
        ),
        (["--classes", "a,b"], "argument --classes: {ckpt} predicts 3 classes, expected 2: ['a', 'b']"),
        (
            ["--encoder", "resnet50"],
            "argument --encoder: {ckpt} was built on encoder 'xception65', expected 'resnet50'",
        ),
    ],
)
def test_cli_checkpoint_that_does_not_fit(
    tmp_path: Path, checkpoint: Path, extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    Image.fromarray(random_image(33, 33)).save(tmp_path / "x.png")
    code = main(["predict", "--checkpoint", str(checkpoint), "--input", str(tmp_path / "x.png"), "--output",
                 str(tmp_path / "out"), *extra])  # fmt: skip
    assert code == 2
    assert capsys.readouterr().err.strip() == "zoo predict: error: " + message.format(ckpt=checkpoint)
    assert not (tmp_path / "out" / "pred").exists()


def test_weights_that_do_not_fit_name_expected_and_found(tmp_path: Path, checkpoint: Path) -> None:
    saved = torch.load(checkpoint)
    saved["zoo"]["build_args"]["num_classes"] = 5
    torch.save(saved, tmp_path / "edited.pt")
    with pytest.raises(ValueError, match=r"edited.pt: the weights do not fit .* 5 classes\)") as info:
        Predictor.from_checkpoint(tmp_path / "edited.pt")
    assert "expected (5, " in str(info.value) and "found (3, " in str(info.value)


def test_missing_input_and_checkpoint(tmp_path: Path, checkpoint: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["predict", "--checkpoint", str(checkpoint), "--input", str(tmp_path / "nothing.jpg"), "--output",
                 str(tmp_path / "out")])  # fmt: skip
    assert code == 2 and "nothing.jpg" in capsys.readouterr().err
    code = main(["predict", "--checkpoint", str(tmp_path / "none.pt"), "--input", str(tmp_path), "--output",
                 str(tmp_path / "out")])  # fmt: skip
    assert code == 2 and "no such checkpoint" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------- the first hour


def test_float_images_in_0_255_are_refused_not_clipped(predictor: Predictor) -> None:
    image = random_image(33, 47)
    expected = predictor.predict(image)
    np.testing.assert_array_equal(predictor.predict(image.astype(np.float32) / 255), expected)  # float in 0..1
    with pytest.raises(ValueError) as error:
        predictor.predict(image.astype(np.float64))  # what a user gets from cv2/PIL arithmetic
    assert str(error.value) == (
        f"image: float values in [0, {image.max()}]; give uint8 (0..255) or float in 0..1 "
        "(divide a float image in 0..255 by 255)"
    )
    with pytest.raises(ValueError, match=r"^images: dtype int64 is not an image's"):
        predictor.predict_batch([image.astype(np.int64)])


def test_from_checkpoint_reads_the_file_once(checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reads = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *args, **kwargs: reads.append(args[0]) or real_load(*args, **kwargs))
    predictor = Predictor.from_checkpoint(checkpoint, pad_to=(40, 40))
    assert reads == [checkpoint]
    assert predictor.meta["class_names"] == predictor.class_names == ["background", "thing", "stuff"]
    assert predictor.pad_value == tuple(predictor.meta["build_args"]["mean"])


def run_zoo(*argv: str, **kwargs) -> subprocess.CompletedProcess:
    """``python -m zoo ARGV`` in a fresh process, as a user runs it."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "zoo", *argv], capture_output=True, text=True, env=env, **kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
def test_a_device_this_machine_lacks_is_one_line_exit_2(
    tmp_path: Path, checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    Image.fromarray(random_image(20, 20)).save(tmp_path / "x.png")
    common = ["--checkpoint", str(checkpoint), "--input", str(tmp_path / "x.png"), "--output", str(tmp_path / "o")]
    gpu = run_zoo("predict", *common, "--device", "gpu")
    assert gpu.returncode == 2
    assert gpu.stderr.strip().splitlines()[-1] == (
        "zoo predict: error: argument --device: 'gpu' is not a device; valid: cpu, cuda, cuda:N"
    )
    capsys.readouterr()
    assert main(["predict", *common, "--device", "cuda"]) == 2  # in this process: torch is imported already
    assert capsys.readouterr().err.strip().splitlines() == [
        "zoo predict: error: argument --device: 'cuda': CUDA is not available on this machine; valid here: 'cpu'"
    ]
    assert not (tmp_path / "o").exists()
    with pytest.raises(ValueError, match="^device: 'cuda': CUDA is not available on this machine"):
        Predictor.from_checkpoint(checkpoint, "cuda")


def test_every_help_is_instant_with_examples() -> None:
    """``zoo COMMAND --help`` imports neither torch nor the models (the library loads when the command runs)."""
    code = (
        "import sys, contextlib, io\n"
        "from zoo.cli import main\n"
        "for command in ('predict', 'eval', 'export', 'benchmark', 'summary', 'data', 'serve', 'convert',\n"
        "                'ablation', 'demo'):\n"
        "    out = io.StringIO()\n"
        "    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):\n"
        "        main([command, '--help'])\n"
        "    assert 'examples:' in out.getvalue(), command\n"
        "heavy = sorted(m for m in ('torch', 'timm', 'segmentation_models_pytorch', 'torchmetrics', 'lightning',\n"
        "    'pytorch_lightning', 'onnxruntime') if m in sys.modules)\n"
        "print(heavy)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert done.stdout.strip() == "[]"


class PixelModel(torch.nn.Module):
    """A cheap per-pixel model whose activations are large (32 float channels at full resolution)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 1), torch.nn.ReLU(), torch.nn.Conv2d(32, 3, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def test_large_images_run_in_tiles_with_the_same_answer() -> None:
    model = PixelModel().eval()
    image = random_image(300, 500)
    whole = Predictor(model, num_classes=3, max_pixels=None).predict(image)
    tiled = Predictor(model, num_classes=3, max_pixels=10_000, tile=128, tile_margin=8)
    calls = []
    tiled.model = lambda x: calls.append(tuple(x.shape[-2:])) or model(x)
    np.testing.assert_array_equal(tiled.predict(image), whole)  # a per-pixel model: tiles change nothing
    assert len(calls) == 3 * 4 and max(calls) == (128 + 16, 128 + 16)


BIG_IMAGE_CHILD = """
import resource, sys
import numpy as np, torch
sys.path.insert(0, {tests!r})
from test_predict import PixelModel
from zoo.infer.predictor import Predictor

torch.set_num_threads(1)
image = np.zeros(({height}, {width}, 3), np.uint8)  # a big photograph's size, cheap to make
image[::7, ::5] = 200
predictor = Predictor(PixelModel().eval(), num_classes=3, max_pixels={max_pixels})
with open("/proc/self/status") as f:
    virtual = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize"))
budget = virtual + {budget_mb} * 2**20
resource.setrlimit(resource.RLIMIT_AS, (budget, budget))
try:
    mask = predictor.predict(image)
except (MemoryError, RuntimeError) as error:
    print("out of memory:", type(error).__name__)
    sys.exit(3)
print("ok", mask.shape, int(mask.max()))
"""


@pytest.mark.slow
@pytest.mark.parametrize("tiled", [True, False])
def test_a_large_photograph_fits_in_bounded_memory(tiled: bool) -> None:
    """4000x6000 (24 megapixels): whole, the model's activations alone need ~3 GB; in tiles it runs in 1 GB."""
    code = BIG_IMAGE_CHILD.format(
        tests=str(REPO / "tests"), height=4000, width=6000, budget_mb=1024, max_pixels=2048 * 2048 if tiled else None
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    if tiled:
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.split()[0] == "ok"
    else:  # the same image whole does not fit: the limit is real
        assert done.returncode == 3 and "out of memory" in done.stdout, done.stderr[-2000:]


def with_sbit(path: Path, bits: int) -> None:
    """Insert a PNG ``sBIT`` chunk (significant bits of a grayscale image) before the first IDAT."""
    data = path.read_bytes()
    chunk = b"sBIT" + bytes([bits])
    crc = zlib.crc32(chunk).to_bytes(4, "big")
    at = data.index(b"IDAT") - 4
    path.write_bytes(data[:at] + (1).to_bytes(4, "big") + chunk + crc + data[at:])


def test_12_bit_data_in_16_bit_pngs_reads_by_its_own_range(tmp_path: Path) -> None:
    ramp = np.linspace(0, 4095, 64 * 48).round().astype(np.uint16).reshape(48, 64)  # a 12-bit scanner's output
    Image.fromarray(ramp).save(tmp_path / "gray12.png")
    expected = np.round(ramp / 4095 * 255).astype(np.uint8)
    np.testing.assert_array_equal(read_image(tmp_path / "gray12.png")[..., 0], expected)
    rgb = np.stack([ramp, 4095 - ramp, np.full_like(ramp, 2048)], axis=-1)
    cv2.imwrite(str(tmp_path / "rgb12.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))  # 16-bit colour PNG
    np.testing.assert_array_equal(read_image(tmp_path / "rgb12.png"), np.round(rgb / 4095 * 255).astype(np.uint8))
    full = (ramp.astype(np.uint32) * 16).astype(np.uint16)  # 16-bit data that uses the whole range
    Image.fromarray(full).save(tmp_path / "gray16.png")
    np.testing.assert_array_equal(read_image(tmp_path / "gray16.png")[..., 0], np.round(full / 65535 * 255))
    ten = (ramp // 4).astype(np.uint16)  # 10-bit data, declared so by its sBIT chunk
    Image.fromarray(ten).save(tmp_path / "gray10.png")
    with_sbit(tmp_path / "gray10.png", 10)
    np.testing.assert_array_equal(read_image(tmp_path / "gray10.png")[..., 0], np.round(ten / 1023 * 255))
