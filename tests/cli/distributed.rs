//! Data-parallel training over MPI (`--features mpi`, `mpirun` on the PATH; otherwise each
//! test says why it is skipped): two ranks train what one process with their global batch
//! trains (with synchronized batch norm too), sharded validation, final test and `wsol
//! eval` score and write exactly what one process does, bad launches fail on every rank,
//! a rank killed with SIGKILL ends the job (then `--resume` finishes it with the
//! uninterrupted run's metrics), and a hung rank is ended by the collective timeout.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

/// `mpirun` with the flags a CI container needs: root allowed, more ranks than cores
/// allowed, no core binding (ranks would share one core), one compute thread per rank.
fn mpirun(cwd: &Path) -> Option<Command> {
    if !cfg!(feature = "mpi") {
        eprintln!("skipped: wsol was built without the `mpi` feature (cargo test --features mpi)");
        return None;
    }
    if Command::new("mpirun").arg("--version").output().is_err() {
        eprintln!("skipped: no `mpirun` on the PATH (apt-get install openmpi-bin libopenmpi-dev)");
        return None;
    }
    let mut cmd = Command::new("mpirun");
    cmd.args(["--allow-run-as-root", "--oversubscribe", "--bind-to", "none", "-x", "RAYON_NUM_THREADS=1"])
        .current_dir(cwd)
        // Open MPI's shared-memory single-copy path needs ptrace rights containers lack.
        .env("OMPI_MCA_btl_vader_single_copy_mechanism", "none");
    Some(cmd)
}

const WSOL: &str = env!("CARGO_BIN_EXE_wsol");

fn ranks(mut cmd: Command, n: usize, args: &[&str]) -> Output {
    cmd.args(["-np", &n.to_string(), WSOL]).args(args).output().expect("run mpirun")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `loss <x>` of each epoch line of a run's train.log.
fn epoch_losses(run: &Path) -> Vec<f64> {
    let log = std::fs::read_to_string(run.join("train.log")).unwrap();
    log.lines()
        .filter(|l| l.starts_with("epoch"))
        .map(|l| l.split("loss ").nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap())
        .collect()
}

fn weights(run: &Path) -> Vec<(String, Vec<f32>)> {
    let map =
        candle_core::safetensors::load(run.join("checkpoints/last.safetensors"), &candle_core::Device::Cpu).unwrap();
    let mut v: Vec<(String, Vec<f32>)> =
        map.into_iter().map(|(k, t)| (k, t.flatten_all().unwrap().to_vec1::<f32>().unwrap())).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// The synthetic set and config of these tests: batch-norm statistics frozen (running
/// statistics, so the loss does not depend on how the batch is cut), 17 val images so
/// the last val batch leaves rank 1 nothing.
fn setup(dir: &Path, train: usize) -> String {
    synth(dir, train, 17, 24);
    let cfg = write_config(dir, "ddp", "");
    let c = cfg.to_str().unwrap().to_string();
    c
}

const SETS: [&str; 8] = [
    "--set",
    "model.freeze_bn=true",
    "--set",
    "data.batch_size=16",
    "--set",
    "data.workers=1",
    "--set",
    "train.select_by=maxboxacc_v2",
];

#[test]
fn distributed_two_ranks_train_as_one_process_with_the_global_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let Some(mpi) = mpirun(dir) else { return };
    let c = setup(dir, 96);
    let mut args = vec!["train", "--config", &c, "--set", "train.epochs=2", "--quiet"];
    args.extend(SETS);
    let mut one = args.clone();
    one.extend(["--out", "one"]);
    let single = Command::new(WSOL).args(&one).env("RAYON_NUM_THREADS", "1").current_dir(dir).output().unwrap();
    assert!(single.status.success(), "{}", text(&single.stderr));
    let mut two = args.clone();
    two.extend(["--out", "two"]);
    let out = ranks(mpi, 2, &two);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "mpirun failed:\n{stdout}\n{stderr}");
    // Rank 0 alone prints the table and writes the files.
    assert_eq!(stdout.matches("maxboxacc_v2").count(), 1, "{stdout}");
    let log = std::fs::read_to_string(dir.join("two/train.log")).unwrap();
    assert!(log.contains("distributed: 2 ranks (mpi), 8 images per rank per step"), "{log}");
    assert!(log.contains("allreduce"), "{log}");

    let (a, b) = (epoch_losses(&dir.join("one")), epoch_losses(&dir.join("two")));
    assert_eq!(a.len(), 2);
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() < 2e-4, "epoch losses differ: one process {a:?}, two ranks {b:?}");
    }
    let (wa, wb) = (weights(&dir.join("one")), weights(&dir.join("two")));
    assert_eq!(wa.iter().map(|w| &w.0).collect::<Vec<_>>(), wb.iter().map(|w| &w.0).collect::<Vec<_>>());
    let mut worst = 0f32;
    for ((name, x), (_, y)) in wa.iter().zip(&wb) {
        for (p, q) in x.iter().zip(y) {
            let d = (p - q).abs() / (1.0 + p.abs());
            assert!(d < 1e-5, "{name}: one process {p}, two ranks {q}");
            worst = worst.max(d);
        }
    }
    eprintln!("largest relative weight difference after 12 steps: {worst:e}");
}

/// `train.sync_bn: true`: batch-norm statistics over the global batch, so two ranks train
/// the batch-norm net (`tiny`, statistics not frozen) as one process with the global batch
/// does, running statistics included; one process with it is the plain path, bit for bit.
#[test]
fn distributed_sync_bn_trains_as_one_process_with_the_global_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let c = setup(dir, 64);
    let mut args = vec!["train", "--config", &c, "--set", "train.epochs=2", "--quiet"];
    args.extend(&SETS[2..]);
    args.extend(["--set", "model.freeze_bn=false", "--set", "train.sync_bn=true"]);
    let alone = |out: &str, sync: &str| {
        let a = [args.clone(), vec!["--set", sync, "--out", out]].concat();
        let o = Command::new(WSOL).args(&a).env("RAYON_NUM_THREADS", "1").current_dir(dir).output().unwrap();
        assert!(o.status.success(), "{}", text(&o.stderr));
    };
    alone("one", "train.sync_bn=true");
    alone("plain", "train.sync_bn=false");
    assert_eq!(weights(&dir.join("one")), weights(&dir.join("plain")), "one process: sync_bn changes nothing");
    let Some(mpi) = mpirun(dir) else { return };
    let out = ranks(mpi, 2, &[args.clone(), vec!["--out", "two"]].concat());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (a, b) = (epoch_losses(&dir.join("one")), epoch_losses(&dir.join("two")));
    assert_eq!(a.len(), 2);
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() < 2e-4, "epoch losses differ: one process {a:?}, two ranks {b:?}");
    }
    let (wa, wb) = (weights(&dir.join("one")), weights(&dir.join("two")));
    assert!(wa.iter().any(|w| w.0.ends_with("running_var")), "a net with batch norm");
    let mut worst = (0f32, String::new());
    for ((name, x), (_, y)) in wa.iter().zip(&wb) {
        for (p, q) in x.iter().zip(y) {
            let d = (p - q).abs() / (1.0 + p.abs());
            assert!(d < 1e-4, "{name}: one process {p}, two ranks {q}");
            if d > worst.0 {
                worst = (d, name.clone());
            }
        }
    }
    eprintln!(
        "sync_bn: largest relative weight difference after 8 steps: {:e} ({}); losses {a:?} vs {b:?}",
        worst.0, worst.1
    );
    // Without it, per-rank statistics move the run away from the single process's.
    let per_rank = ranks(
        mpirun(dir).unwrap(),
        2,
        &[args.clone(), vec!["--set", "train.sync_bn=false", "--out", "apart"]].concat(),
    );
    assert!(per_rank.status.success(), "{}", text(&per_rank.stderr));
    let apart = weights(&dir.join("apart"));
    let moved = wa
        .iter()
        .zip(&apart)
        .flat_map(|((_, x), (_, y))| x.iter().zip(y).map(|(p, q)| (p - q).abs() / (1.0 + p.abs())));
    let moved = moved.fold(0f32, f32::max);
    eprintln!("per-rank statistics: largest relative weight difference {moved:e}");
    assert!(moved > 10.0 * worst.0, "per-rank {moved:e} vs synchronized {:e}", worst.0);
}

/// Validation is sharded over the ranks and its counts summed: the score `best` was picked
/// by equals, bit for bit, one process's evaluation of the same weights.
#[test]
fn distributed_sharded_validation_equals_one_process_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let Some(mpi) = mpirun(dir) else { return };
    let c = setup(dir, 64);
    let mut args = vec!["train", "--config", &c, "--set", "train.epochs=1", "--out", "two", "--quiet"];
    args.extend(SETS);
    let out = ranks(mpi, 2, &args);
    assert!(out.status.success(), "{}\n{}", text(&out.stdout), text(&out.stderr));
    let state = read_json(&dir.join("two/checkpoints/last.json"));
    let sharded = state["best_score"].as_f64().expect("a validation score");
    let ckpt = dir.join("two/checkpoints/last.safetensors");
    let mut eval = vec!["eval", "--config", &c, "--checkpoint", ckpt.to_str().unwrap(), "--split", "val"];
    eval.extend(["--out", "val", "--quiet"]);
    eval.extend(SETS);
    wsol_ok(&eval, dir);
    let whole = read_json(&dir.join("val/metrics.json"));
    assert_eq!(whole["num_images"], 17);
    assert_eq!(sharded, whole["maxboxacc_v2"].as_f64().unwrap(), "sharded {sharded}, one process {whole}");
    // The epoch line's val numbers (two decimals) come from the same sums.
    let log = std::fs::read_to_string(dir.join("two/train.log")).unwrap();
    let want = format!(
        "val top1 {:.2}  gt-known {:.2}  v2 {:.2}",
        whole["top1_cls"].as_f64().unwrap(),
        whole["gt_known_loc"].as_f64().unwrap(),
        whole["maxboxacc_v2"].as_f64().unwrap()
    );
    assert!(log.contains(&want), "expected `{want}` in:\n{log}");
}

/// Every file of an evaluation directory (recursively), as bytes, by relative path.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.strip_prefix(dir).unwrap().display().to_string(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// `wsol eval` under `mpirun -np 2` shares the split by whole batches (3 batches of 8:
/// rank 1 gets one, and nothing in the last round) and rank 0 writes, byte for byte,
/// the files one process writes: metrics.json (faithfulness included), per_image.csv,
/// curve.csv and every map of `--save-cams`. The final test of a two-rank training run
/// is the same sharded evaluation: its metrics.json and per_image.csv are also the
/// single process's evaluation of the checkpoint.
#[test]
fn distributed_eval_writes_what_one_process_writes_byte_for_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let Some(mpi) = mpirun(dir) else { return };
    let c = setup(dir, 32);
    let faith = ["--set", "eval.faithfulness=[avg_drop, deletion]", "--set", "eval.faithfulness_steps=4"];
    let mut args = vec!["train", "--config", &c, "--set", "train.epochs=1", "--out", "run", "--quiet"];
    args.extend(SETS);
    args.extend(faith);
    let trained = ranks(mpi, 2, &args);
    assert!(trained.status.success(), "{}", text(&trained.stderr));
    let ckpt = dir.join("run/checkpoints/last.safetensors");
    let mut eval = vec!["eval", "--config", &c, "--checkpoint", ckpt.to_str().unwrap(), "--quiet"];
    eval.extend(SETS);
    eval.extend(faith);
    let cut = ["--set", "data.batch_size=8", "--set", "log.tensorboard=false"];
    let mut one = [eval.clone(), cut.to_vec(), vec!["--out", "one/eval", "--save-cams", "one/cams"]].concat();
    let single = Command::new(WSOL).args(&one).env("RAYON_NUM_THREADS", "1").current_dir(dir).output().unwrap();
    assert!(single.status.success(), "{}", text(&single.stderr));
    one.truncate(one.len() - 4);
    let two = [one.clone(), vec!["--out", "two/eval", "--save-cams", "two/cams"]].concat();
    let out = ranks(mpirun(dir).unwrap(), 2, &two);
    assert!(out.status.success(), "{}\n{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(text(&out.stdout).matches("maxboxacc_v2").count(), 1, "rank 0 alone prints the table");
    let (a, b) = (files(&dir.join("one")), files(&dir.join("two")));
    let names = |f: &[(String, Vec<u8>)]| f.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(&a), names(&b));
    assert_eq!(a.iter().filter(|(n, _)| n.ends_with(".npy")).count(), 24, "{:?}", names(&a));
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        assert!(x == y, "{name} differs:\none process:\n{}\ntwo ranks:\n{}", text(x), text(y));
    }
    let metrics = read_json(&dir.join("two/eval/metrics.json"));
    assert_eq!(metrics["num_images"], 24);
    assert!(metrics["avg_drop"].is_f64() && metrics["deletion_auc"].is_f64(), "{metrics}");

    // The training run's own final test (batches of 16), against one process's.
    let whole = [eval.clone(), vec!["--out", "whole"]].concat();
    let single = Command::new(WSOL).args(&whole).env("RAYON_NUM_THREADS", "1").current_dir(dir).output().unwrap();
    assert!(single.status.success(), "{}", text(&single.stderr));
    let strip = |mut v: serde_json::Value| {
        let o = v.as_object_mut().unwrap();
        o.remove("provenance");
        o.remove("checkpoint");
        v
    };
    assert_eq!(strip(read_json(&dir.join("run/metrics.json"))), strip(read_json(&dir.join("whole/metrics.json"))));
    let rows = |d: &str| std::fs::read(dir.join(d).join("per_image.csv")).unwrap();
    assert!(rows("run") == rows("whole"), "per_image.csv of the training run differs");
}

#[test]
fn distributed_bad_launches_fail_on_every_rank() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let Some(_) = mpirun(dir) else { return };
    let c = setup(dir, 32);
    let base = ["train", "--config", &c, "--set", "train.epochs=1", "--quiet"];
    let fails_on_both = |out: Output, want: &str| {
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "should fail: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        for r in 0..2 {
            let said = stderr.lines().any(|l| l.starts_with(&format!("error: rank {r}:")) && l.contains(want));
            assert!(said, "rank {r} should say `{want}`:\n{stderr}");
        }
    };
    // A global batch the ranks cannot share equally.
    let mut args = base.to_vec();
    args.extend(["--set", "data.batch_size=15", "--out", "odd"]);
    fails_on_both(ranks(mpirun(dir).unwrap(), 2, &args), "data.batch_size");
    assert!(!dir.join("odd").exists(), "nothing is written before the checks");
    // Synchronized batch norm on a device the MPI engine does not serve.
    let mut args = base.to_vec();
    args.extend(["--set", "train.sync_bn=true", "--set", "device=cuda:0", "--out", "sync"]);
    fails_on_both(ranks(mpirun(dir).unwrap(), 2, &args), "train.sync_bn");
    // Ranks started with different configs (MPMD launch).
    let mut cmd = mpirun(dir).unwrap();
    cmd.args(["-np", "1", WSOL]).args(base).args(["--set", "seed=1", "--out", "x", ":", "-np", "1", WSOL]);
    let out = cmd.args(base).args(["--set", "seed=2", "--out", "x"]).output().unwrap();
    fails_on_both(out, "config");
    // One rank cannot read its data (another working directory without the set).
    let other = dir.join("elsewhere");
    std::fs::create_dir_all(&other).unwrap();
    let mut cmd = mpirun(dir).unwrap();
    cmd.args(["-np", "1", "-wdir", dir.to_str().unwrap(), WSOL]).args(base).args(["--out", "y", ":"]);
    cmd.args(["-np", "1", "-wdir", other.to_str().unwrap(), WSOL]).args(base).args(["--out", "y"]);
    let out = cmd.output().unwrap();
    fails_on_both(out, "loading");
    // torchrun's variables without an engine that can meet through MASTER_ADDR.
    let out = Command::new(WSOL).args(base).env("WORLD_SIZE", "2").env("RANK", "0").current_dir(dir).output();
    let stderr = text(&out.unwrap().stderr);
    assert!(stderr.starts_with("error: WORLD_SIZE=2"), "{stderr}");
}

/// A build without the feature, started as one of several MPI processes, says so.
#[test]
fn distributed_launch_without_the_feature_is_refused() {
    if cfg!(feature = "mpi") {
        eprintln!("skipped: this build has the `mpi` feature");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let c = write_config(dir, "nompi", "");
    for var in ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE"] {
        let out = Command::new(WSOL)
            .args(["train", "--config", c.to_str().unwrap(), "--quiet"])
            .env(var, "2")
            .current_dir(dir)
            .output()
            .unwrap();
        let stderr = text(&out.stderr);
        assert!(!out.status.success());
        assert!(stderr.contains("built without MPI") && stderr.contains("--features mpi"), "{stderr}");
    }
}

fn wait(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// The pid of the process of rank `rank` among `parent`'s children (Open MPI starts local
/// ranks as children of mpirun and names their rank in the environment).
fn rank_pid(parent: u32, rank: usize) -> Option<u32> {
    let children = std::fs::read_to_string(format!("/proc/{parent}/task/{parent}/children")).ok()?;
    children.split_whitespace().filter_map(|p| p.parse::<u32>().ok()).find(|pid| {
        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        env.split(|&b| b == 0).any(|kv| kv == format!("OMPI_COMM_WORLD_RANK={rank}").as_bytes())
    })
}

#[test]
fn distributed_killed_rank_ends_the_job_and_resume_finishes_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let Some(_) = mpirun(dir) else { return };
    let c = setup(dir, 480);
    let mut args = vec!["train", "--config", &c, "--set", "train.epochs=3", "--quiet"];
    args.extend(SETS);
    let whole = ranks(mpirun(dir).unwrap(), 2, &[args.clone(), vec!["--out", "whole"]].concat());
    assert!(whole.status.success(), "{}", text(&whole.stderr));

    let mut cmd = mpirun(dir).unwrap();
    cmd.args(["-np", "2", WSOL]).args(&args).args(["--out", "cut"]);
    let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let log = dir.join("cut/train.log");
    let t0 = Instant::now();
    while !std::fs::read_to_string(&log).unwrap_or_default().contains("epoch 1/3") {
        assert!(t0.elapsed() < Duration::from_secs(120), "the run did not finish its first epoch");
        std::thread::sleep(Duration::from_millis(20));
    }
    let victim = rank_pid(child.id(), 1).expect("rank 1's process");
    Command::new("kill").args(["-9", &victim.to_string()]).status().unwrap();
    let status = wait(&mut child, Duration::from_secs(60));
    let Some(status) = status else {
        child.kill().unwrap();
        panic!("the job still runs 60 s after rank 1 was killed");
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    let log_text = std::fs::read_to_string(&log).unwrap();
    if log_text.contains("metrics written") {
        eprintln!("note: the run finished before the signal; the resume below is a no-op");
    } else {
        assert!(!status.success(), "{stderr}");
        assert!(stderr.contains("signal 9") || stderr.contains("Killed"), "mpirun should name the kill:\n{stderr}");
        let said = stderr.lines().find(|l| l.contains("signal 9") || l.contains("Killed")).unwrap_or_default();
        eprintln!("mpirun: {}", said.trim());
    }
    // Checkpoints are committed by rename: no temporary file is left behind.
    for e in std::fs::read_dir(dir.join("cut/checkpoints")).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!name.contains(".tmp"), "half-written file {name}");
    }
    let resumed = ranks(mpirun(dir).unwrap(), 2, &[args.clone(), vec!["--resume", "cut"]].concat());
    assert!(resumed.status.success(), "{}", text(&resumed.stderr));
    let strip = |mut v: serde_json::Value| {
        v.as_object_mut().unwrap().remove("checkpoint");
        v
    };
    assert_eq!(strip(read_json(&dir.join("whole/metrics.json"))), strip(read_json(&dir.join("cut/metrics.json"))));
}

/// A rank that lives but hangs (`WSOL_TEST_STALL_RANK`, a test hook that sleeps before
/// each step) holds rank 0 in the step's all-reduce until `WSOL_COLLECTIVE_TIMEOUT`
/// ends the whole job: one line naming the rank and the collective, a non-zero exit, no
/// half-written checkpoint. A bad value of the variable is refused at launch.
#[test]
fn distributed_hung_rank_times_out_and_ends_the_job() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let Some(mut cmd) = mpirun(dir) else { return };
    let c = setup(dir, 64);
    let mut args = vec!["train", "--config", &c, "--set", "train.epochs=2", "--out", "hung", "--quiet"];
    args.extend(SETS);
    cmd.args(["-x", "WSOL_COLLECTIVE_TIMEOUT=2", "-x", "WSOL_TEST_STALL_RANK=1", "-np", "2", WSOL]).args(&args);
    let t0 = Instant::now();
    let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let Some(status) = wait(&mut child, Duration::from_secs(60)) else {
        child.kill().unwrap();
        panic!("the job still runs 60 s after its collective timeout of 2 s");
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "{stderr}");
    let line = stderr.lines().find(|l| l.starts_with("error: rank 0: collective `")).unwrap_or_else(|| {
        panic!("rank 0 should name the collective it waited in:\n{stderr}");
    });
    assert!(line.contains("WSOL_COLLECTIVE_TIMEOUT=2") && line.contains("ending every rank"), "{line}");
    eprintln!("{line} (job ended after {:.1} s)", t0.elapsed().as_secs_f64());
    for e in std::fs::read_dir(dir.join("hung/checkpoints")).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!name.contains(".tmp"), "half-written file {name}");
    }
    let mut cmd = mpirun(dir).unwrap();
    cmd.args(["-x", "WSOL_COLLECTIVE_TIMEOUT=soon", "-np", "2", WSOL]).args(&args);
    let stderr = text(&cmd.output().unwrap().stderr);
    assert!(stderr.contains("WSOL_COLLECTIVE_TIMEOUT=soon: expected seconds"), "{stderr}");
}
