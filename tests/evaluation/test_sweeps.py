"""Multirun tables: `python -m d3sr.sweep_report` on the paper's Table 4b sweep, on a sweep with a failed job, and
with seeds aggregated per configuration."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from d3sr.errors import D3SRError
from d3sr.evaluation.sweeps import configs_markdown, read_sweep, sweep_configs, sweep_markdown, swept_overrides
from d3sr.run_results import write_run_result

REPO = Path(__file__).resolve().parents[2]
SMALL = ["iterations=1", "checkpoint_every=1", "degradation=bicubic", "data.crop_size=64", "data.crops_per_image=1",
         "data.batch_size=2", "data.val_crops_per_image=1", "data.val_crop_size=64", "trainer.val_check_interval=1",
         "callbacks.image_logger=null", "logger=none"]  # fmt: skip


def write_job(folder: Path, number: int, overrides: list[str], result: dict | None) -> None:
    job = folder / str(number)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if result is not None:
        write_run_result(job, result)  # as d3sr.train writes it (a NaN metric as JSON's NaN)


def test_report_keeps_failed_and_unfinished_jobs(tmp_path):
    write_job(tmp_path, 0, ["experiment=demo", "loss=paper"], {"status": "completed", "iterations": 150,
              "metrics": {"val/psnr_y": 24.5, "val/ssim_y": 0.7}, "checkpoint": "/x/last.ckpt"})  # fmt: skip
    write_job(tmp_path, 1, ["experiment=demo", "loss=lpips"], {"status": "failed", "error": "D3SRError: no VGG16"})
    write_job(tmp_path, 2, ["experiment=demo", "loss=dists"], None)
    jobs = read_sweep(tmp_path)
    assert [(j.number, j.status) for j in jobs] == [(0, "completed"), (1, "failed"), (2, "no result")]
    table = sweep_markdown(jobs, tmp_path)
    assert "Shared overrides: experiment=demo" in table and "3 jobs, 1 completed, 2 not" in table
    assert "| 0 | loss=paper | completed | 24.5000 | 0.7000 | 150 | /x/last.ckpt |" in table
    assert "| 1 | loss=lpips | failed |" in table and "D3SRError: no VGG16" in table
    assert "| 2 | loss=dists | no result |" in table


def test_report_of_a_folder_without_jobs_is_one_clear_error(run_command, tmp_path):
    with pytest.raises(D3SRError, match="holds no multirun jobs"):
        read_sweep(tmp_path)
    result = run_command("sweep_report", str(tmp_path / "missing"))
    assert result.returncode == 2 and result.stderr.startswith("error:") and "Traceback" not in result.stderr


def test_table4b_multirun_runs_every_row_and_is_reported(run_command, tmp_path):
    """The demo-scale Table 4b (none, pixel CNN, random-init latent UNet, SD-style, SDXL-style), one iteration each."""
    result = run_command("train", "-m", "experiment=demo", "hparams_search=table4b", *SMALL,
                     f"paths.log_dir={tmp_path}")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = (tmp_path / "demo" / "multiruns").iterdir()
    report = run_command("sweep_report", str(sweep))
    assert report.returncode == 0, report.stderr[-2000:]
    rows = list(csv.DictReader((sweep / "sweep_report_jobs.csv").open()))
    assert [r["overrides"] for r in rows] == [f"model/discriminator={d}" for d in
                                              ("none", "demo_pixel", "demo_scratch", "demo_sd", "demo")]  # fmt: skip
    assert all(r["status"] == "completed" and float(r["val/psnr_y"]) > 15 for r in rows), rows
    assert all(0.5 < float(r["val/grid"]) < 20 for r in rows), rows  # validation's block-grid ratio, reported
    assert all(Path(r["checkpoint / error"]).is_file() for r in rows)
    # One seed each: five configurations of n=1, their means the jobs' values.
    configs = list(csv.DictReader((sweep / "sweep_report.csv").open()))
    assert [(c["overrides"], c["n"], c["seeds"]) for c in configs] == [(r["overrides"], "1", "default") for r in rows]
    assert [float(c["val/psnr_y mean"]) for c in configs] == pytest.approx([float(r["val/psnr_y"]) for r in rows],
                                                                           abs=1e-4)  # fmt: skip
    assert "| model/discriminator=none | 1 | default |" in report.stdout


def test_a_failed_job_does_not_stop_the_sweep_and_keeps_its_row(run_command, tmp_path):
    result = run_command("train", "-m", "experiment=demo", "model/generator=tiny", "model/discriminator=tiny",
                     "model.generator.timestep=5000,399", *SMALL, f"paths.log_dir={tmp_path}")  # fmt: skip
    assert result.returncode != 0  # Hydra reports the failed job once the sweep is done
    said = result.stdout + result.stderr
    assert "job 0 failed:" in said and "model.generator.timestep must be in [0, 999], got 5000" in said
    (sweep,) = (tmp_path / "demo" / "multiruns").iterdir()
    jobs = read_sweep(sweep)
    assert [j.status for j in jobs] == ["failed", "completed"]  # job 1 ran after job 0 failed
    assert "timestep must be in [0, 999], got 5000" in jobs[0].error and jobs[1].checkpoint


@pytest.mark.slow
def test_table4a_multirun_runs_every_loss_row(run_command, tmp_path):
    result = run_command("train", "-m", "experiment=demo", "hparams_search=table4a", *SMALL,
                     f"paths.log_dir={tmp_path}")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = (tmp_path / "demo" / "multiruns").iterdir()
    jobs = read_sweep(sweep)
    _, own = swept_overrides(jobs)
    assert own == [[f"loss={o}"] for o in ("mse_only", "lpips", "ea_lpips", "dists", "paper")]
    assert all(j.status == "completed" for j in jobs)


def completed(number: int, metrics: dict[str, float]) -> dict:
    """The result.json of a finished job with these metrics."""
    return {"status": "completed", "metrics": metrics, "checkpoint": f"/x/{number}.ckpt", "iterations": 150}


# Two configurations × seeds 0, 1 in Hydra's job order; jobs 1 and 3 list their overrides in another order.
SEED_JOBS = [
    (["experiment=demo", "loss=paper", "seed=0"], {"val/psnr_y": 24.0, "val/ssim_y": 0.70, "train/g/mse": 0.1}),
    (["seed=1", "experiment=demo", "loss=paper"], {"val/psnr_y": 24.6, "val/ssim_y": 0.74, "train/g/mse": 0.1}),
    (["experiment=demo", "loss=lpips", "seed=0"], {"val/psnr_y": 23.0, "val/ssim_y": 0.60, "val/lpips": 0.05}),
    (["loss=lpips", "seed=1", "experiment=demo"], {"val/psnr_y": 23.4, "val/ssim_y": 0.66, "val/lpips": 0.07}),
]


def write_seed_sweep(folder: Path) -> None:
    for number, (overrides, metrics) in enumerate(SEED_JOBS):
        write_job(folder, number, overrides, completed(number, metrics))


# By hand: the sample std (ddof=1) of two values a, b is |a - b| / √2 (ddof=0 would give |a - b| / 2).
# loss=paper  PSNR-Y 24.0, 24.6 → 24.3 ± 0.6/√2 = 0.4243   SSIM-Y 0.70, 0.74 → 0.72 ± 0.04/√2 = 0.0283
# loss=lpips  PSNR-Y 23.0, 23.4 → 23.2 ± 0.4/√2 = 0.2828   SSIM-Y 0.60, 0.66 → 0.63 ± 0.06/√2 = 0.0424
#             colour error 0.05, 0.07 → 0.06 ± 0.02/√2 = 0.0141


def test_the_seeds_of_a_configuration_are_one_row_with_mean_and_sample_std(run_command, tmp_path):
    write_seed_sweep(tmp_path)
    jobs = read_sweep(tmp_path)
    # Overrides listed in another order still group: the jobs differ only in seed=.
    assert [[job.number for job in config.jobs] for config in sweep_configs(jobs)] == [[0, 1], [2, 3]]
    table = configs_markdown(jobs, tmp_path)
    assert "metrics: mean ± std over seeds (sample std, ddof=1), n: completed jobs." in table
    assert "| overrides | n | seeds | val/psnr_y | val/ssim_y | excluded |" in table
    assert "| loss=paper | 2 | 0, 1 | 24.3000 ± 0.4243 | 0.7200 ± 0.0283 |  |" in table
    assert "| loss=lpips | 2 | 0, 1 | 23.2000 ± 0.2828 | 0.6300 ± 0.0424 |  |" in table
    assert table.count("\n| loss=") == 2

    # The command line prints the configuration table and writes it to sweep_report.md/.csv (unrounded numbers), the
    # job table to sweep_report_jobs.md/.csv. A metric beyond the default ones is a column when asked for.
    report = run_command("sweep_report", str(tmp_path), "--metrics", "val/psnr_y", "val/lpips")
    assert report.returncode == 0, report.stderr[-2000:]
    assert "| loss=paper | 2 | 0, 1 | 24.3000 ± 0.4243 |  |  |" in report.stdout
    assert "| loss=lpips | 2 | 0, 1 | 23.2000 ± 0.2828 | 0.0600 ± 0.0141 |  |" in report.stdout
    assert (tmp_path / "sweep_report.md").read_text() in report.stdout
    configs = list(csv.DictReader((tmp_path / "sweep_report.csv").open()))
    assert [(c["overrides"], c["n"], c["seeds"]) for c in configs] == [("loss=paper", "2", "0, 1"),
                                                                       ("loss=lpips", "2", "0, 1")]  # fmt: skip
    assert [float(c["val/psnr_y mean"]) for c in configs] == pytest.approx([24.3, 23.2])
    assert [float(c["val/psnr_y std (ddof=1)"]) for c in configs] == pytest.approx([0.6 / 2**0.5, 0.4 / 2**0.5])
    assert [c["val/lpips n"] for c in configs] == ["0", "2"] and configs[0]["val/lpips mean"] == ""
    assert len(list(csv.DictReader((tmp_path / "sweep_report_jobs.csv").open()))) == 4


def test_failed_unfinished_and_nan_results_are_counted_and_left_out_of_the_statistics(run_command, tmp_path):
    write_seed_sweep(tmp_path)
    # A failed seed of loss=paper (a NaN optimized metric: failed, with its metrics) must not move the mean.
    failed = {"status": "failed", "error": "optimized_metric val/psnr_y is nan", "iterations": 150,
              "metrics": {"val/psnr_y": math.nan, "val/ssim_y": 0.1}}  # fmt: skip
    write_job(tmp_path, 4, ["experiment=demo", "loss=paper", "seed=2"], failed)
    # A completed seed of loss=lpips with a NaN SSIM-Y, and one still running (no result.json, the default seed).
    write_job(tmp_path, 5, ["experiment=demo", "loss=lpips", "seed=2"],
              completed(5, {"val/psnr_y": 23.8, "val/ssim_y": math.nan}))  # fmt: skip
    write_job(tmp_path, 6, ["experiment=demo", "loss=lpips"], None)
    # One seed only: the mean with n=1, no spread.
    write_job(tmp_path, 7, ["experiment=demo", "loss=dists", "seed=0"],
              completed(7, {"val/psnr_y": 24.1, "val/ssim_y": 0.71}))  # fmt: skip
    jobs = read_sweep(tmp_path)
    table = configs_markdown(jobs, tmp_path)
    assert "8 jobs, 6 completed, 2 not." in table and "3 configurations" in table
    assert "| loss=paper | 2 | 0, 1 | 24.3000 ± 0.4243 | 0.7200 ± 0.0283 | failed: 1 (job 4 seed 2) |" in table
    # loss=lpips PSNR-Y 23.0, 23.4, 23.8 → 23.4 ± sqrt((0.16 + 0 + 0.16) / 2) = 0.4; SSIM-Y without the NaN: as above.
    assert ("| loss=lpips | 3 | 0, 1, 2 | 23.4000 ± 0.4000 | 0.6300 ± 0.0424 (n=2) | no result: 1 (job 6 seed "
            "default); val/ssim_y nan: 1 excluded (job 5 seed 2) |") in table  # fmt: skip
    assert "| loss=dists | 1 | 0 | 24.1000 (n=1) | 0.7100 (n=1) |  |" in table

    # The job table keeps every job, the failed and unfinished ones with their status.
    assert sweep_markdown(jobs, tmp_path).count("\n| ") == 1 + 8  # the header, then the jobs
    report = run_command("sweep_report", str(tmp_path), "--per-job")
    assert report.returncode == 0, report.stderr[-2000:]
    assert "| 4 | loss=paper seed=2 | failed | nan | 0.1000 | 150 | optimized_metric val/psnr_y is nan |" in (
        report.stdout
    )
    assert "| 6 | loss=lpips | no result |" in report.stdout and " ± " not in report.stdout
    jobs_csv = list(csv.DictReader((tmp_path / "sweep_report_jobs.csv").open()))
    assert [r["job"] for r in jobs_csv] == [str(n) for n in range(8)]
    assert len(list(csv.DictReader((tmp_path / "sweep_report.csv").open()))) == 3


def test_the_per_job_table_has_a_row_per_seed_and_unknown_metrics_are_refused(run_command, tmp_path):
    write_seed_sweep(tmp_path)
    report = run_command("sweep_report", str(tmp_path), "--per-job", "--metrics", "val/*")
    assert report.returncode == 0, report.stderr[-2000:]
    assert "| job | overrides | status | val/lpips | val/psnr_y | val/ssim_y | iterations |" in report.stdout
    assert "| 3 | loss=lpips seed=1 | completed | 0.0700 | 23.4000 | 0.6600 | 150 | /x/3.ckpt |" in report.stdout
    rows = list(csv.DictReader((tmp_path / "sweep_report_jobs.csv").open()))
    assert [(r["job"], r["overrides"]) for r in rows] == [
        ("0", "loss=paper seed=0"),
        ("1", "seed=1 loss=paper"),
        ("2", "loss=lpips seed=0"),
        ("3", "loss=lpips seed=1"),
    ]
    report = run_command("sweep_report", str(tmp_path), "--metrics", "val/sharpness")
    assert report.returncode == 2 and report.stderr.startswith("error: --metrics val/sharpness: no job")
    assert "(reported: train/g/mse, val/lpips, val/psnr_y, val/ssim_y)" in report.stderr


def test_paired_seed_differences_remove_the_shared_seed_spread(tmp_path, monkeypatch, capsys):
    """bench/paired_seeds.py: B is 0.1 dB above A on every seed while the seeds themselves move both by 2 dB."""
    import importlib.util

    for number, (config, seed, psnr) in enumerate([("loss=a", 0, 24.0), ("loss=b", 0, 24.1), ("loss=a", 1, 26.0),
                                                   ("loss=b", 1, 26.1), ("loss=a", 2, 22.0)]):  # fmt: skip
        write_job(tmp_path, number, ["experiment=demo", config, f"seed={seed}"],
                  {"status": "completed", "iterations": 1, "metrics": {"val/psnr_y": psnr}})  # fmt: skip
    path = Path(__file__).resolve().parents[2] / "bench" / "paired_seeds.py"
    spec = importlib.util.spec_from_file_location("bench_paired_seeds", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    monkeypatch.setattr("sys.argv", ["paired_seeds.py", str(tmp_path), "--reference", "loss=b",
                                     "--metrics", "val/psnr_y"])  # fmt: skip
    script.main()
    row = capsys.readouterr().out.splitlines()[-1]
    assert row.startswith("| loss=a | 2 | +0.1000 ± 0.0000"), row  # seed 2 has no loss=b job: n = 2
