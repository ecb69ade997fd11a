"""The ``fastconv`` command through its entry points, ``main(argv)`` and ``python -m fastconv``.

Small inputs throughout; the profile runs once on its 'tiny' preset (same code
path as --quick, smaller sizes), bench and calibrate on shrunken problem lists.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import fastconv
from fastconv import cli
from fastconv.cli_tools import bench_table, imageio, profile_claims, profile_sweeps

REPO = Path(fastconv.__file__).resolve().parents[1]


def run_cli(capsys, *argv):
    """``(status, stdout, stderr)`` of ``main(argv)``; argparse's exits become statuses."""
    try:
        status = cli.main(list(argv))
    except SystemExit as exc:
        status = exc.code
    out, err = capsys.readouterr()
    return status, out, err


def assert_one_line_error(status, err, expected_status=1, needle=""):
    assert status == expected_status
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("fastconv"), lines[0]
    assert "error:" in lines[0] and needle in lines[0], lines[0]


def python_m(*argv, cwd=None):
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "fastconv", *argv], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=120)


@pytest.fixture
def grey_png(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "grey.png"
    Image.fromarray((rng.random((24, 30)) * 255).astype(np.uint8)).save(path)
    return path


# ------------------------------------------------------------------ the parser

def test_python_m_help_lists_every_subcommand():
    result = python_m("--help")
    assert result.returncode == 0
    for name in ("info", "profile", "bench", "calibrate", "convolve", "demo"):
        assert name in result.stdout


def test_python_m_error_is_one_line_and_nonzero(tmp_path):
    result = python_m("convolve", str(tmp_path / "missing.npy"), "edge", "-o", "out.npy",
                      cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0
    assert result.stderr.startswith("fastconv: error: cannot read")


@pytest.mark.parametrize("argv, needle", [
    ([], "COMMAND"), (["bogus"], "invalid choice"), (["convolve"], "required"),
    (["convolve", "a.npy", "edge", "--mode", "weird"], "--mode"),
    (["profile", "--threads", "0"], "--threads"),
    (["demo", "--orientations", "x"], "--orientations"),
])
def test_bad_arguments_exit_2_with_one_line(capsys, argv, needle):
    status, out, err = run_cli(capsys, *argv)
    assert_one_line_error(status, err, 2, needle)
    assert out == ""


def test_every_subcommand_has_help(capsys):
    for name in ("info", "profile", "bench", "calibrate", "convolve", "demo"):
        status, out, _ = run_cli(capsys, name, "--help")
        assert status == 0 and "--json" in out


def test_version(capsys):
    status, out, _ = run_cli(capsys, "--version")
    assert status == 0 and fastconv.__version__ in out


# ------------------------------------------------------------------ info

def test_info_text_and_json(capsys):
    status, out, _ = run_cli(capsys, "info")
    assert status == 0
    for name in fastconv.backends.REGISTRY:
        assert name in out
    assert "CUDA:" in out and "calibration profile in use" in out
    status, out, _ = run_cli(capsys, "info", "--json")
    info = json.loads(out)
    assert set(info["backends"]["available"]) == set(fastconv.backends.REGISTRY)
    assert info["threads"]["fastconv"] >= 1
    assert "available" in info["cuda"] or "reason" in info["cuda"]


# ------------------------------------------------------------------ convolve

def test_convolve_npy_matches_the_library(capsys, tmp_path):
    rng = np.random.default_rng(1)
    a, k = rng.standard_normal((20, 17)), rng.standard_normal((3, 4))
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "k.npy", k)
    for mode in ("full", "same", "valid"):
        out = tmp_path / f"{mode}.npy"
        status, text, _ = run_cli(capsys, "convolve", str(tmp_path / "a.npy"),
                                  str(tmp_path / "k.npy"), "-o", str(out), "--mode", mode)
        assert status == 0 and "wrote" in text
        np.testing.assert_allclose(np.load(out), fastconv.convolve(a, k, mode), rtol=1e-12)
    out = tmp_path / "corr.npy"
    status, text, _ = run_cli(capsys, "convolve", str(tmp_path / "a.npy"), str(tmp_path / "k.npy"),
                              "-o", str(out), "--correlate", "--method", "direct", "--explain")
    assert status == 0 and "chosen: direct" in text
    np.testing.assert_allclose(np.load(out), fastconv.correlate(a, k, "same"), rtol=1e-12)


def test_convolve_image_to_png_with_named_kernel(capsys, tmp_path, grey_png):
    out = tmp_path / "edges.png"
    status, text, _ = run_cli(capsys, "convolve", str(grey_png), "sobel-x", "-o", str(out),
                              "--json")
    assert status == 0
    report = json.loads(text)
    assert report["output_shape"] == [24, 30] and report["method"] in fastconv.backends.REGISTRY
    written = np.asarray(Image.open(out))
    assert written.shape == (24, 30) and written.dtype == np.uint8
    assert written.min() == 0 and written.max() == 255  # signed result: min-max scaled


def test_convolve_colour_image_channel_by_channel(capsys, tmp_path):
    rng = np.random.default_rng(2)
    rgb = (rng.random((16, 18, 3)) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    out = tmp_path / "blur.npy"
    status, _, _ = run_cli(capsys, "convolve", str(tmp_path / "rgb.png"), "box:3", "-o", str(out))
    assert status == 0
    expected = fastconv.convolve(rgb[..., 1] / 255.0, np.full((3, 3), 1 / 9), "same")
    np.testing.assert_allclose(np.load(out)[..., 1], expected, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("case", ["missing", "garbage", "bad-kernel", "bad-method", "no-output",
                                  "1d-to-png", "ndim-mismatch", "unwritable", "bad-extension"])
def test_convolve_errors_are_one_line(capsys, tmp_path, grey_png, case):
    np.save(tmp_path / "v.npy", np.arange(8.0))
    (tmp_path / "garbage.png").write_bytes(b"not an image")
    argv = {
        "missing": [str(tmp_path / "nope.png"), "edge", "-o", str(tmp_path / "o.png")],
        "garbage": [str(tmp_path / "garbage.png"), "edge", "-o", str(tmp_path / "o.png")],
        "bad-kernel": [str(grey_png), "no-such-kernel", "-o", str(tmp_path / "o.png")],
        "bad-method": [str(grey_png), "edge", "-o", str(tmp_path / "o.png"), "--method", "magic"],
        "no-output": [str(grey_png), "edge"],
        "1d-to-png": [str(tmp_path / "v.npy"), str(tmp_path / "v.npy"), "-o",
                      str(tmp_path / "o.png")],
        "ndim-mismatch": [str(tmp_path / "v.npy"), "edge", "-o", str(tmp_path / "o.npy")],
        "unwritable": [str(grey_png), "edge", "-o", str(tmp_path / "no" / "dir" / "o.npy")],
        "bad-extension": [str(grey_png), "edge", "-o", str(tmp_path / "o.xyz")],
    }[case]
    status, out, err = run_cli(capsys, "convolve", *argv)
    assert_one_line_error(status, err)
    assert not (tmp_path / "o.png").exists()


def test_named_kernels():
    from fastconv.cli_tools.convolve_cmd import named_kernel
    assert named_kernel("box:3").sum() == pytest.approx(1.0)
    g = named_kernel("gauss:1.5")
    assert g.shape == (11, 11) and g.sum() == pytest.approx(1.0)
    assert np.linalg.matrix_rank(g) == 1
    assert named_kernel("not-a-kernel") is None


# ------------------------------------------------------------------ image io

def test_to_uint8_scalings():
    v = np.array([[-2.0, 0.0, 2.0]])
    np.testing.assert_array_equal(imageio.to_uint8(v, "minmax"), [[0, 128, 255]])
    np.testing.assert_array_equal(imageio.to_uint8(v, "abs"), [[255, 0, 255]])
    np.testing.assert_array_equal(imageio.to_uint8(v, "clip"), [[0, 0, 255]])
    np.testing.assert_array_equal(imageio.to_uint8(np.array([[0.0, 0.5, 1.0]])), [[0, 128, 255]])


def test_png_round_trip(tmp_path):
    values = np.linspace(0, 1, 12).reshape(3, 4)
    imageio.save_array(tmp_path / "x.png", values)
    back = imageio.load_array(tmp_path / "x.png")
    np.testing.assert_allclose(back, values, atol=0.5 / 255 + 1e-12)


def test_sample_photo_ships_with_matplotlib():
    photo = imageio.sample_photo((28, 32))
    assert photo.shape == (28, 32) and 0.0 <= photo.min() < photo.max() <= 1.0


# ------------------------------------------------------------------ demo

def test_demo_on_a_small_image(capsys, tmp_path, grey_png):
    out = tmp_path / "demo.png"
    status, text, _ = run_cli(capsys, "demo", "--image", str(grey_png), "--out", str(out),
                              "--orientations", "2", "--json")
    assert status == 0
    steps = json.loads(text)["steps"]
    assert [s["output"] for s in steps] == [[24, 29], [4, 24, 30], [2, 6, 7]]
    assert Image.open(out).size[0] > 500


def test_demo_default_photo(capsys, tmp_path):
    out = tmp_path / "demo.png"
    status, text, _ = run_cli(capsys, "demo", "--out", str(out), "--orientations", "2")
    assert status == 0 and "wrote" in text and out.stat().st_size > 50_000


def test_demo_unreadable_image(capsys, tmp_path):
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 truncated")
    status, _, err = run_cli(capsys, "demo", "--image", str(tmp_path / "bad.jpg"),
                             "--out", str(tmp_path / "d.png"))
    assert_one_line_error(status, err, needle="cannot read")


# ------------------------------------------------------------------ profile

def test_profile_tiny_writes_report_plots_and_json(capsys, tmp_path):
    out = tmp_path / "prof"
    status, text, err = run_cli(capsys, "profile", "--preset", "tiny", "--out", str(out), "--json")
    assert status == 0, err
    document = json.loads(text)
    claims = {c["key"]: c for c in document["claims"]}
    assert set(claims) == {"edge", "direct", "fft", "separable", "crossover", "memory",
                           "receptive_field", "pooling"}
    # the counts, the impulse check and the memory accounting do not depend on timing noise
    assert claims["edge"]["verdict"] == "PASS"
    assert claims["edge"]["data"]["ops"] == 267_960
    assert claims["edge"]["data"]["dense_matches_conv"] is True
    assert claims["receptive_field"]["verdict"] == "PASS"
    assert claims["memory"]["verdict"] == "PASS"
    assert claims["pooling"]["verdict"] == "PASS"
    assert all(c["verdict"] in ("PASS", "FAIL", "INFO", "SKIP") for c in claims.values())
    report = (out / "report.md").read_text()
    assert "| Claim | Counted operations | Measured | Verdict |" in report
    for claim in claims.values():
        for png in claim["plots"]:
            assert (out / png).stat().st_size > 10_000
            assert f"]({png})" in report
    assert json.loads((out / "results.json").read_text())["preset"] == "tiny"


def test_profile_unwritable_output(capsys, tmp_path):
    (tmp_path / "file").write_text("")
    status, _, err = run_cli(capsys, "profile", "--preset", "tiny", "--out",
                             str(tmp_path / "file" / "sub"))
    assert_one_line_error(status, err, needle="output folder")


def test_edge_counts_follow_the_chapter():
    p = fastconv.problem.make_problem((1, 1, 280, 320), (1, 1, 1, 2), "float64")
    assert profile_claims.conv_ops(p) == 280 * 319 * 3 == 267_960
    image = np.random.default_rng(5).random((6, 7))
    matrix = profile_claims.dense_matrix(image.shape)
    expected = fastconv.correlate(image, profile_claims.EDGE_KERNEL, "valid")
    np.testing.assert_allclose(matrix @ image.ravel(), expected.ravel(), atol=1e-14)


def test_receptive_field_formula_and_impulses_agree():
    layers = [("conv", 3, 1), ("conv", 3, 1), ("pool", 2, 2), ("conv", 3, 1)]
    assert profile_claims.receptive_fields(layers) == [3, 5, 6, 10]
    assert profile_claims.impulse_fields(layers, 40) == [3, 5, 6, 10]


def test_fit_and_overtake():
    widths = [3, 9, 27, 81]
    slope, intercept = profile_sweeps.fit_loglog(widths, [2.0 * w ** 2 for w in widths])
    assert slope == pytest.approx(2.0) and math.exp(intercept) == pytest.approx(2.0)
    assert math.isnan(profile_sweeps.fit_loglog([1], [1.0])[0])
    slow, fast = [1, 2, 4, 8], [3, 3, 3, 3]
    assert profile_sweeps.overtake(widths, slow, fast) == (9, 27)
    assert profile_sweeps.overtake(widths, fast, [1, 1, 1, 1]) == (None, 3)
    assert profile_sweeps.overtake(widths, [1, 1, 1, 1], fast) is None
    assert profile_sweeps.fastest_range(widths, {"a": slow, "b": fast}, "a") == [3, 9]


# ------------------------------------------------------------------ bench, calibrate

def test_bench_table_save_and_plot(capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(bench_table._PROBLEMS, "quick",
                        [("1-D 300, w=5", (300,), 5, False),
                         ("2-D 20x20, 3x3 G", (20, 20), 3, True)])
    save, plot = tmp_path / "b" / "RESULTS-cli.md", tmp_path / "bench.png"
    status, text, err = run_cli(capsys, "bench", "--quick", "--save", str(save),
                                "--plot", str(plot), "--json")
    assert status == 0, err
    rows = json.loads(text)["rows"]
    peers = {r["peer"] for r in rows}
    assert {"scipy.signal.convolve", "scipy.ndimage.convolve", "numpy.convolve"} <= peers
    assert all(r["agrees"] for r in rows), [r for r in rows if not r["agrees"]]
    assert all(r["seconds"] > 0 and r["ratio"] > 0 for r in rows)
    assert "| Problem ('same' mode) |" in save.read_text()
    assert plot.stat().st_size > 10_000


def test_bench_unwritable_save(capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(bench_table._PROBLEMS, "quick", [("1-D 100, w=3", (100,), 3, False)])
    (tmp_path / "file").write_text("")
    status, _, err = run_cli(capsys, "bench", "--quick", "--save", str(tmp_path / "file" / "x.md"))
    assert_one_line_error(status, err, needle="cannot write")


def test_calibrate_no_save_prints_regret(capsys, monkeypatch):
    from fastconv import calibration, costs
    monkeypatch.setattr(calibration, "_QUICK_GRID", [((1, 1, 500), (1, 1, 5), 2),
                                                     ((1, 1, 24, 24), (1, 1, 3, 3), 1)])
    before = costs.coefficients()
    status, text, err = run_cli(capsys, "calibrate", "--no-save", "--json")
    assert status == 0, err
    report = json.loads(text)
    assert report["saved_to"] is None and len(report["problems"]) == 4
    assert all(r >= 1.0 for r in report["regret_before"] + report["regret_after"])
    assert costs.coefficients() == before  # --no-save leaves the dispatcher as it was
    status, text, _ = run_cli(capsys, "calibrate", "--no-save")
    assert "regret" in text and "profile not saved" in text


def test_profile_presets_parse():
    parser = cli.build_parser()
    assert parser.parse_args(["profile"]).preset == "full"
    assert parser.parse_args(["profile", "--quick"]).preset == "quick"
    assert parser.parse_args(["profile"]).threads == 1


def test_profile_strict_exits_3_on_a_failed_claim(capsys, tmp_path, monkeypatch):
    from fastconv.cli_tools import profile
    from fastconv.cli_tools.claim import Claim
    failed = Claim("direct", "Direct convolution is O(w^d)", "claim", "counted", "measured", "FAIL")
    monkeypatch.setattr(profile, "measure", lambda preset, tick: ([failed], {}))
    argv = ["profile", "--preset", "tiny", "--no-plots", "--out", str(tmp_path)]
    assert run_cli(capsys, *argv)[0] == 0
    status, out, _ = run_cli(capsys, *argv, "--strict")
    assert status == 3 and "FAIL" in out
    assert "**FAIL**" in (tmp_path / "report.md").read_text()


def test_info_renders_an_available_gpu():
    from fastconv.cli_tools.info import _render_cuda
    line = _render_cuda({"available": True, "reason": "", "name": "NVIDIA H100",
                         "compute_capability": "9.0", "memory_total_bytes": 80 * 2**30,
                         "memory_free_bytes": 79 * 2**30, "multiprocessors": 132})
    assert line == ("CUDA: NVIDIA H100, compute capability 9.0, 80 GiB memory (79 GiB free), "
                    "132 multiprocessors")
    assert _render_cuda({"available": False, "reason": "no GPU"}) == "CUDA: unavailable: no GPU"
