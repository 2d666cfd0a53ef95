//! `statespace repro NAME --quick`: every experiment runs end to end on generated data, writes its
//! table and figure, reads its finished runs back, resumes after Ctrl-C to the same table, and
//! its numbers agree with what the runs themselves recorded.

use std::path::Path;
use std::process::{Command, Output, Stdio};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_statespace"))
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn repro(name: &str, out: &Path, work: &Path) -> Output {
    bin()
        .args(["repro", name, "--quick", "--out"])
        .arg(out)
        .arg("--work")
        .arg(work)
        .args(["--threads", "2"])
        .output()
        .expect("the binary runs")
}

/// The report without its `- time:` line (the only line that differs between two runs).
fn report(out: &Path, name: &str) -> String {
    std::fs::read_to_string(out.join(format!("{name}.md")))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("- time:"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The cells of the table row whose first cell is `first` (and whose second contains `second`).
fn row(md: &str, first: &str, second: &str) -> Vec<String> {
    md.lines()
        .filter(|l| l.starts_with('|'))
        .map(|l| {
            l.trim_matches('|')
                .split(" | ")
                .map(|c| c.trim().to_string())
                .collect::<Vec<_>>()
        })
        .find(|c| c[0] == first && c.get(1).is_some_and(|s| s.contains(second)))
        .unwrap_or_else(|| panic!("no row {first} / {second} in\n{md}"))
}

fn num(cell: &str) -> f64 {
    cell.split_whitespace()
        .next()
        .unwrap()
        .trim_end_matches('%')
        .replace('−', "-")
        .parse()
        .unwrap_or_else(|_| panic!("not a number: {cell}"))
}

fn check_png(path: &Path) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{}", path.display());
    // IHDR: width and height (big endian) after the 8-byte signature and the chunk header
    let w = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    let h = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
    assert_eq!(w, 1000);
    assert!(h >= 600, "{h}");
    assert!(
        bytes.len() > 20_000,
        "an empty figure? {} bytes",
        bytes.len()
    );
}

fn test_acc(run: &Path) -> f64 {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find_map(|v| v["test_acc"].as_f64())
        .unwrap()
}

#[test]
fn every_experiment_runs_quick_and_writes_its_table_and_figure() {
    let dir = tempfile::tempdir().unwrap();
    let (out, work) = (dir.path().join("out"), dir.path().join("work"));
    for name in [
        "ptd-conditioning",
        "ptd-robustness",
        "hope-memory",
        "httyh-basis",
        "s4d-inits",
        "sgconv-params",
    ] {
        let t = std::time::Instant::now();
        let o = repro(name, &out, &work);
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        assert!(
            t.elapsed().as_secs() < 120,
            "{name} --quick took {:?}",
            t.elapsed()
        );
        let md = report(&out, name);
        assert!(md.contains(&format!("- command: `statespace repro {name} --quick")));
        assert!(md.contains("- seed: 0 · **--quick**"), "{md}");
        assert!(md.contains(&format!("[{name}.png]({name}.png)")));
        assert!(md.contains("What it shows:"), "{md}");
        assert!(!md.contains("NaN"), "{name}: a NaN in\n{md}");
        check_png(&out.join(format!("{name}.png")));
    }

    // ptd-conditioning: the shipped E at 3.4 % keeps its promises; a random E of the same norm
    // is far worse conditioned
    let md = report(&out, "ptd-conditioning");
    let shipped = row(&md, "3.4%", "shipped");
    let random = row(&md, "3.4%", "random");
    assert!(num(&shipped[2]) <= 9.0, "{shipped:?}");
    assert!(num(&shipped[4]) <= -0.5 + 1e-9, "{shipped:?}");
    assert!(num(&random[2]) > 3.0 * num(&shipped[2]), "{random:?}");

    // ptd-robustness: the clean column is the mean of what each run recorded as its test accuracy
    let md = report(&out, "ptd-robustness");
    for kind in ["s4d", "s4", "s4-ptd", "s5", "s5-ptd"] {
        let accs: Vec<f64> = (0..3)
            .map(|s| test_acc(&work.join(format!("ptd-robustness/quick/{kind}-seed{s}"))))
            .collect();
        let mean = 100.0 * accs.iter().sum::<f64>() / 3.0;
        let r = row(&md, kind, "±");
        assert!((num(&r[1]) - mean).abs() < 0.006, "{kind}: {r:?} vs {mean}");
    }

    // httyh-basis: the closed form matches the matrix exponential; the best step of a delay
    // scales as 1/delay for the translated measures
    let md = report(&out, "httyh-basis");
    for n in ["0", "1", "15"] {
        let r = row(&md, n, "");
        assert!(num(&r[3]) < 1e-10, "{r:?}");
    }
    // (columns: measure, two delays, slope of Δ*, slope of the edge, memory d·Δ_edge)
    for m in ["LegT", "FouT"] {
        let r = row(&md, m, "Δ*");
        let slope = num(&r[4]);
        assert!((-1.2..=-0.8).contains(&slope), "{m}: {r:?}");
    }
    // LegT's window: A and B are halved as in the S4 code, so θ = 2 time units
    let legt = row(&md, "LegT", "Δ*");
    assert!((1.5..=2.5).contains(&num(&legt[5])), "{legt:?}");

    // s4d-inits: the band-limited error of S4D-LegS against S4-LegS falls as N grows
    let md = report(&out, "s4d-inits");
    let (e4, e16) = (num(&row(&md, "4", "")[2]), num(&row(&md, "16", "")[2]));
    assert!(e16 < 0.5 * e4, "{e4} → {e16}");

    // sgconv-params: the parameter counts match within the width's granularity
    let md = report(&out, "sgconv-params");
    let s4d = num(&row(&md, "matched", "s4d")[3]);
    let sg = num(&row(&md, "matched", "sgconv")[3]);
    assert!((sg - s4d).abs() / s4d < 0.1, "{s4d} vs {sg}");
    let half = num(&row(&md, "halved", "s4d")[3]);
    assert!((half - s4d / 2.0).abs() / s4d < 0.1, "{s4d} vs {half}");

    // a second run reads every finished run back and writes the same report
    let before = report(&out, "ptd-robustness");
    let o = repro("ptd-robustness", &out, &work);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("reading back"), "{}", stderr(&o));
    assert_eq!(report(&out, "ptd-robustness"), before);
}

#[test]
fn an_interrupted_experiment_resumes_to_the_uninterrupted_report() {
    let dir = tempfile::tempdir().unwrap();
    let (out_a, work_a) = (dir.path().join("out-a"), dir.path().join("work-a"));
    let (out_b, work_b) = (dir.path().join("out-b"), dir.path().join("work-b"));
    let o = repro("hope-memory", &out_a, &work_a);
    assert!(o.status.success(), "{}", stderr(&o));
    // the same experiment, interrupted once a few of its runs have checkpoints
    let child = bin()
        .args(["repro", "hope-memory", "--quick", "--out"])
        .arg(&out_b)
        .arg("--work")
        .arg(&work_b)
        .args(["--threads", "2"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let runs = work_b.join("hope-memory/quick");
    let t0 = std::time::Instant::now();
    let started = || {
        std::fs::read_dir(&runs).map_or(0, |d| {
            d.filter_map(Result::ok)
                .filter(|e| e.path().join("last.safetensors").exists())
                .count()
        })
    };
    while started() < 3 {
        assert!(t0.elapsed().as_secs() < 120, "no runs appeared");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let killed = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let o = child.wait_with_output().unwrap();
    let e = stderr(&o);
    if o.status.success() {
        // the signal came after the last run: nothing to resume, the report must still agree
        eprintln!("the experiment finished before the signal");
    } else {
        assert_eq!(o.status.code(), Some(130), "{e}");
        assert!(e.contains("run the same command again to continue"), "{e}");
        assert!(!out_b.join("hope-memory.md").exists());
        let o = repro("hope-memory", &out_b, &work_b);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let (a, b) = (report(&out_a, "hope-memory"), report(&out_b, "hope-memory"));
    let strip = |s: &str| {
        s.lines()
            .filter(|l| !l.starts_with("- command:") && !l.starts_with("data_dir"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(strip(&a), strip(&b));
}

#[test]
fn a_full_run_without_fashion_mnist_says_where_to_get_it() {
    let dir = tempfile::tempdir().unwrap();
    let o = bin()
        .args(["repro", "ptd-robustness", "--data"])
        .arg(dir.path().join("nowhere"))
        .arg("--out")
        .arg(dir.path().join("out"))
        .arg("--work")
        .arg(dir.path().join("work"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(
        e.contains("nowhere") && e.contains("apt-get install dataset-fashion-mnist"),
        "{e}"
    );
    let o = bin()
        .args(["repro", "ptd-robustness", "--quick", "--threads", "0"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--threads"), "{}", stderr(&o));
}
