from tmd_bench.checkpoint import MetricsLog


def _steps(path):
    return [int(line.split(",")[0]) for line in path.read_text().splitlines()[1:]]


def test_metrics_log_resume_drops_rows_past_the_checkpoint_and_a_fresh_run_starts_clean(tmp_path):
    path = tmp_path / "log.csv"
    log = MetricsLog(path)
    for step in (10, 20, 30, 40, 50):
        log.append({"step": step, "loss": 1.0 / step})
    log = MetricsLog(path, resume_step=30)  # the checkpoint was at 30: 40 and 50 never happened
    log.append({"step": 40, "loss": 0.5})
    assert _steps(path) == [10, 20, 30, 40]
    MetricsLog(path).append({"step": 10, "loss": 2.0})  # a fresh run (no checkpoint) in the same folder
    assert _steps(path) == [10] and path.read_text().startswith("step,loss\n")
