"""`python -m d3sr.app`: the request function on a tiny checkpoint, the page's messages, the command, and the page
driven in a real browser (Debian's Chromium, headless, through Selenium)."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import sys
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from PIL import Image

from d3sr import app
from d3sr.errors import D3SRError, run_reporting_errors
from d3sr.inference import D3SRPipeline

CONF = Path(__file__).resolve().parents[1] / "src" / "d3sr" / "conf"


@pytest.fixture(scope="module")
def checkpoint(demo_checkpoint) -> Path:
    """The session's demo checkpoint (tests/conftest.py): the shipped tiny backbone, LoRA at its init."""
    return demo_checkpoint


@pytest.fixture(scope="module")
def pipe(checkpoint) -> D3SRPipeline:
    return D3SRPipeline.from_pretrained(checkpoint, device="cpu", dtype=torch.float32)


def photo(path: Path, height: int = 24, width: int = 40) -> Path:
    """A crop of skimage's astronaut (her face) saved as PNG."""
    Image.fromarray(skimage.data.astronaut()[40 : 40 + height, 180 : 180 + width]).save(path)
    return path


# ------------------------------------------------------------------------------------------------------------------
# The request function.


@pytest.fixture(scope="module")
def expected(pipe, tmp_path_factory) -> np.ndarray:
    """The pipeline's own result for the face photo, wavelet colour fix, no tiling."""
    return np.asarray(
        pipe(Image.open(photo(tmp_path_factory.mktemp("face") / "face.png")), color_fix="wavelet", tile_size=0)
    )


@pytest.mark.parametrize("output_format", ["PNG", "JPEG", "WebP"])
def test_upscale_gives_the_pipelines_x4_result_and_its_file(pipe, expected, tmp_path, output_format):
    path = photo(tmp_path / "face.png")
    results = tmp_path / "results"
    results.mkdir()
    done = app.upscale(pipe, path, results, color_fix="wavelet", tile_size=0, output_format=output_format)

    # Exactly ×4, what the pipeline gives for the same options, and the sizes on the page.
    assert done.input.size == (40, 24) and done.result.size == (160, 96)
    assert np.array_equal(np.asarray(done.result), expected)
    assert (
        "40 × 24" in done.info
        and "160 × 96" in done.info
        and " s** (cpu, float32, colour fix wavelet, no tiling)" in done.info
    )
    # The download: named after the upload, in the chosen format, the result itself (lossless formats exactly).
    assert done.file.parent.parent == results and done.file.name == f"face_x4{app.SUFFIXES[output_format]}"
    with Image.open(done.file) as saved:
        assert saved.format == output_format.upper() and saved.size == (160, 96)
        error = np.abs(np.asarray(saved.convert("RGB"), dtype=float) - np.asarray(done.result, dtype=float)).mean()
    assert error == 0 if output_format == "PNG" else error < 6


def write_text(path: Path) -> Path:
    path.write_text("not an image")
    return path


def write_animated_png(path: Path) -> Path:
    frames = [Image.new("RGB", (8, 8), colour) for colour in ("red", "blue")]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100)
    return path


def write_truncated_png(path: Path) -> Path:
    Image.fromarray(skimage.data.astronaut()[:64, :64]).save(path)
    path.write_bytes(path.read_bytes()[:200])
    return path


@pytest.mark.parametrize(
    ("make", "changes", "message"),
    [
        (write_text, {}, "this file is not an image that can be read"),
        (write_animated_png, {}, r"animated or has several pages \(2 frames\): upload a still image"),
        (photo, {"max_input_pixels": 900}, r"the image is 40×24 \(960 pixels\); this demo accepts up to 900 pixels"),
        (write_truncated_png, {}, "the image cannot be decoded"),
        (photo, {"output_format": "GIF"}, "output format='GIF' is not valid; choose one of 'PNG', 'JPEG', 'WebP'"),
        (photo, {"tile_size": 100}, "tile_size must be 0 .off. or a positive multiple of 8, got 100"),
    ],
    ids=["text", "animated", "too-large", "truncated", "format", "tile-size"],
)
def test_bad_uploads_and_options_get_one_message(pipe, tmp_path, make, changes, message):
    path = make(tmp_path / "upload.png")
    with pytest.raises(D3SRError, match=message):
        app.upscale(pipe, path, tmp_path, **changes)
    assert not list(tmp_path.glob("tmp*")), "no result file for a refused upload"


# ------------------------------------------------------------------------------------------------------------------
# The page's handler and the command.


@pytest.mark.parametrize("slider", [True, False], ids=["image-slider", "side-by-side"])
def test_the_page_shows_results_and_messages(pipe, tmp_path, monkeypatch, slider):
    gr = pytest.importorskip("gradio")
    if not slider:
        monkeypatch.delattr(gr, "ImageSlider", raising=False)  # what Gradio 4.x has
    elif not hasattr(gr, "ImageSlider"):
        pytest.skip(f"gradio {gr.__version__} has no ImageSlider")
    demo = app.build_demo(pipe, tmp_path, max_input_pixels=10_000)
    functions = list(demo.fns.values() if isinstance(demo.fns, dict) else demo.fns)
    assert len(functions) == 1
    on_upscale = functions[0].fn

    *images, info, file = on_upscale(str(photo(tmp_path / "face.png")), "adain", 512, "PNG")
    pair = images[0] if slider else images
    assert len(images) == (1 if slider else 2) and [image.size for image in pair] == [(160, 96), (160, 96)]
    assert "→ **160 × 96** pixels" in info and Path(file).is_file()
    # A bad upload: a message in the status text, nothing shown or offered.
    *images, info, file = on_upscale(str(photo(tmp_path / "big.png", 120, 100)), "adain", 512, "PNG")
    assert images == [None] * len(images) and file is None
    assert info.startswith("**Cannot upscale this upload:** the image is 100×120 (12,000 pixels)")
    assert on_upscale(None, "adain", 512, "PNG")[-2] == "Upload an image first."


def run_command(*overrides: str) -> int:
    """d3sr.app's entry point (conf/app.yaml + overrides, user errors → status 2) in this process."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="app", overrides=list(overrides))
    GlobalHydra.instance().clear()
    try:
        return run_reporting_errors(app.run, cfg) or 0
    except SystemExit as exit_:
        return int(exit_.code or 0)


def test_setup_errors_are_one_line_before_gradio_starts(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gradio", None)  # `import gradio` raises ImportError
    missing = tmp_path / "nowhere"
    assert run_command(f"bundle={missing}") == 2
    message = f"bundle={missing} does not exist: give an inference bundle folder or a checkpoint (.ckpt)"
    assert capsys.readouterr().err == f"error: {message}\n"
    assert run_command() == 2
    assert capsys.readouterr().err.startswith("error: usage: python -m d3sr.app bundle=")
    assert run_command(f"bundle={tmp_path}", "output_format=TIFF") == 2
    assert "output_format='TIFF' is not valid" in capsys.readouterr().err
    assert run_command(f"bundle={tmp_path}") == 2
    assert capsys.readouterr().err == "error: the web demo needs Gradio: pip install 'd3sr[app]'\n"


class FakeBlocks:
    """Records what run() asks of the page: the queue and the launch settings."""

    def __init__(self, calls):
        self.calls = calls

    def queue(self, **settings):
        self.calls["queue"] = settings
        return self

    def launch(self, **settings):
        self.calls["launch"] = settings


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0"])
def test_one_request_at_a_time_on_loopback_unless_told(checkpoint, monkeypatch, caplog, host):
    pytest.importorskip("gradio")
    caplog.set_level(logging.INFO, logger="d3sr.app")
    calls = {}
    monkeypatch.setattr(app, "build_demo", lambda *args: FakeBlocks(calls))
    overrides = [f"bundle={checkpoint}", "inference.device=cpu", "port=7999"]
    assert run_command(*overrides, *([f"host={host}"] if host != "127.0.0.1" else [])) == 0
    resolved = [r.getMessage() for r in caplog.records if r.getMessage().startswith("inference: precision auto -> ")]
    assert len(resolved) == 1 and ", channels_last auto -> " in resolved[0]  # what 'auto' chose, in one line
    assert calls["queue"] == {"default_concurrency_limit": 1, "max_size": 16}
    assert calls["launch"] == {"server_name": host, "server_port": 7999, "max_file_size": "50mb",
                               "prevent_thread_lock": False}  # fmt: skip
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    if host == "127.0.0.1":
        assert not warnings
    else:
        assert warnings == ["WARNING: serving on 0.0.0.0: anyone who can reach this machine on port 7999 can use "
                            "the demo and the model's device; there is no login"]  # fmt: skip


def test_a_port_in_use_is_one_error(pipe, tmp_path):
    pytest.importorskip("gradio")
    demo = app.build_demo(pipe, tmp_path, max_input_pixels=1024)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(D3SRError, match=f"cannot serve on 127.0.0.1:{port}: Cannot find empty port"):
            app.launch(demo, "127.0.0.1", port, block=False)


# ------------------------------------------------------------------------------------------------------------------
# The page in a real browser.


@pytest.fixture
def chromium() -> tuple[str, str]:
    """(chromium binary, chromedriver), or a skip saying what is missing."""
    pytest.importorskip("gradio")
    pytest.importorskip("selenium")
    browser = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    driver = shutil.which("chromedriver")
    if not browser or not driver:
        pytest.skip(
            "browser test not run: chromium or chromedriver not found (apt-get install chromium chromium-driver)"
        )
    return browser, driver


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(pipe, tmp_path, monkeypatch):
    """The page served by app.launch on a free loopback port in this process; yields its URL."""
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    (tmp_path / "results").mkdir()
    demo = app.build_demo(pipe, tmp_path / "results", max_input_pixels=1024 * 1024)
    port = free_port()
    app.launch(demo, "127.0.0.1", port, block=False)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()


def test_the_page_upscales_an_upload_in_chromium(chromium, server, tmp_path):
    browser, driver_path = chromium
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,880"):
        options.add_argument(argument)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})  # fmt: skip
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    wait = WebDriverWait(driver, 60)

    def page_text() -> str:
        return driver.find_element(By.TAG_NAME, "body").text

    def upload_and_upscale(path: Path) -> None:
        driver.get(server)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "input[type=file]"))
        driver.find_element(By.CSS_SELECTOR, "input[type=file]").send_keys(str(path))
        wait.until(lambda d: path.stem in page_text())  # the upload is listed
        button("Upscale ×4").click()

    def button(label: str):
        return next(b for b in driver.find_elements(By.TAG_NAME, "button") if b.text.strip() == label)

    try:
        # A file that is not an image: the page says so (no stack trace).
        fake = tmp_path / "notes.png"
        fake.write_text("not an image")
        upload_and_upscale(fake)
        wait.until(lambda d: "Cannot upscale this upload" in page_text())
        assert "this file is not an image that can be read" in page_text() and "Traceback" not in page_text()

        # A 64×64 photo: the sizes and seconds on the page, the ×4 result beside it, the file from the download button.
        upload_and_upscale(photo(tmp_path / "astronaut.png", 64, 64))
        wait.until(lambda d: "pixels in" in page_text())
        assert "64 × 64 → 256 × 256 pixels in" in page_text()
        shown = [
            img
            for img in driver.find_elements(By.TAG_NAME, "img")
            if "gradio_api/file=" in (img.get_attribute("src") or "")
        ]
        assert len(shown) == 2 and all(int(img.get_attribute("naturalWidth")) == 256 for img in shown)
        button("Download the result").click()
        wait.until(lambda d: (downloads / "astronaut_x4.png").is_file())
        with Image.open(downloads / "astronaut_x4.png") as result:
            assert result.size == (256, 256)

        # The page with its result, not blank.
        driver.execute_script("window.scrollTo(0, 0)")
        screenshot = Image.open(BytesIO(driver.get_screenshot_as_png())).convert("RGB")
    finally:
        driver.quit()
    assert np.asarray(screenshot.convert("L"), dtype=float).std() > 20
    if target := os.environ.get("D3SR_APP_SCREENSHOT"):  # docs/app_screenshot.png is made this way
        screenshot.quantize(256).save(target, optimize=True)
