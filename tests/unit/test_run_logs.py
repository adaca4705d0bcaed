from megatron_mnist.run_logs import compare, logged


def write(run_dir, version, rows):
    path = run_dir / "csv_logs" / f"version_{version}" / "metrics.csv"
    path.parent.mkdir(parents=True)
    path.write_text("epoch,step,train_loss,val_loss\n" + "".join(f"0,{s},{v},\n" for s, v in rows))


def test_versions_are_read_in_the_order_written(tmp_path):
    write(tmp_path / "a", 0, [(0, 1.0), (1, 0.5)])
    write(tmp_path / "a", 10, [(3, 0.2)])  # version_10 after version_2, not between 1 and 2
    write(tmp_path / "a", 2, [(2, 0.3)])
    assert logged(tmp_path / "a", "train_loss") == [(0, 1.0), (1, 0.5), (2, 0.3), (3, 0.2)]


def test_compare_says_identical_different_or_partial(tmp_path):
    write(tmp_path / "a", 0, [(0, 1.0), (1, 0.5), (2, 0.25)])
    write(tmp_path / "b", 0, [(0, 1.0), (1, 0.5), (2, 0.25)])
    write(tmp_path / "c", 0, [(0, 1.0), (1, 0.5000001), (2, 0.75)])
    write(tmp_path / "d", 0, [(0, 1.0), (1, 0.5)])
    assert compare(tmp_path / "a", tmp_path / "b") == (True, "identical: 3 steps of train_loss, bit for bit")
    same, text = compare(tmp_path / "a", tmp_path / "c")
    assert (
        not same and "2 of 3 common steps of train_loss differ, first at step 1, largest |a-b| = 0.5 at step 2" in text
    )
    same, text = compare(tmp_path / "a", tmp_path / "d")
    assert not same and "1 steps logged by one run only (first: 2)" in text


def test_gpu_runs_float_step_column_reads_as_integers(tmp_path):
    # Under MegatronStrategy NeMo logs `step` itself, and the CSV holds it as a float
    path = tmp_path / "g" / "csv_logs" / "version_0" / "metrics.csv"
    path.parent.mkdir(parents=True)
    path.write_text("epoch,global_step,step,train_loss,val_loss\n0,4.0,4.0,0.11,\n0,49.0,49.0,,0.06\n")
    assert logged(tmp_path / "g", "train_loss") == [(4, 0.11)]
    assert logged(tmp_path / "g", "val_loss") == [(49, 0.06)]


def write_version(run_dir, n, train_steps, val_steps, offset=0.0):
    folder = run_dir / "csv_logs" / f"version_{n}"
    folder.mkdir(parents=True)
    lines = ["step,train_loss,val_loss"]
    for step in train_steps:
        lines.append(f"{step},{1 / (step + 1) + offset},")
        if step in val_steps:
            lines.append(f"{step},,{2 / (step + 1) + offset}")
    for step in set(val_steps) - set(train_steps):  # a validation at the step a resumed run starts from
        lines.insert(1, f"{step},,{2 / (step + 1) + offset}")
    (folder / "metrics.csv").write_text("\n".join(lines) + "\n")


def test_a_resumed_run_reads_as_one_history(tmp_path):
    # killed after step 184 (checkpoint after step 149), resumed at 150: it validates again at 149 (another value)
    write_version(tmp_path, 0, range(185), {49, 99, 149})
    write_version(tmp_path, 1, range(150, 300), {149, 199, 249, 299}, offset=0.5)
    train = logged(tmp_path, "train_loss")
    assert [s for s, _ in train] == list(range(300))  # one row per step
    assert dict(train)[100] == 1 / 101 and dict(train)[160] == 1 / 161 + 0.5  # the resumed run's rows from 150 on
    val = logged(tmp_path, "val_loss")
    assert [s for s, _ in val] == [49, 99, 149, 199, 249, 299]
    assert dict(val)[149] == 2 / 150  # the validation the uninterrupted run made, not its repeat


def test_the_report_counts_steps_done_as_the_console_and_checkpoints_do(tmp_path):
    from megatron_mnist.report import final_numbers

    write_version(tmp_path, 0, range(500), {99, 499})
    numbers = final_numbers(tmp_path)
    assert numbers["steps"] == 500 and numbers["final val_loss"] == 2 / 500  # the CSV's last row is step 499
