//! `statespace hippo`: a HiPPO operator, its transition (A, B) or its DPLR / diagonal form.

use super::{Failure, emit};
use clap::{Args, ValueEnum};
use serde_json::json;
use statespace_math::dplr::Dplr;
use statespace_math::hippo::{self, Measure};
use statespace_math::{C64, linalg};

#[derive(Clone, Copy, ValueEnum, Debug)]
pub enum MeasureArg {
    Legs,
    Legt,
    Lagt,
    Glagt,
    Fout,
    Foud,
}

#[derive(Clone, Copy, ValueEnum, Debug, PartialEq)]
pub enum Form {
    /// The real transition (A, B), sign convention x' = Ax + Bu.
    Dense,
    /// The DPLR form on N/2 modes (a "dplr" SSM file, C = first coordinate).
    Dplr,
    /// The diagonal part of the DPLR form (S4D-style; a "diagonal" SSM file, C = first coordinate).
    Diagonal,
}

#[derive(Args)]
#[command(allow_negative_numbers = true)]
pub struct HippoArgs {
    /// The measure.
    #[arg(long, value_enum)]
    pub measure: MeasureArg,
    /// State size N.
    #[arg(long)]
    pub n: usize,
    /// glagt only: exponent α of the measure x^α e^{−x}, in (−1, 1).
    #[arg(long, default_value_t = 0.0)]
    pub alpha: f64,
    /// glagt only: tilt β > 0.
    #[arg(long, default_value_t = 0.01)]
    pub beta: f64,
    /// What to print: dense (A, B), or the dplr / diagonal form as an SSM file for `kernel --from`.
    #[arg(long, value_enum, default_value_t = Form::Dense)]
    pub form: Form,
    /// Step size written into dplr / diagonal SSM files.
    #[arg(long, default_value_t = 0.01)]
    pub dt: f64,
    /// Print JSON: {"a": [[…]], "b": […]} (row-major f64) for the dense form, an SSM file otherwise.
    #[arg(long)]
    pub json: bool,
}

pub fn measure_of(a: &HippoArgs) -> Measure {
    match a.measure {
        MeasureArg::Legs => Measure::LegS,
        MeasureArg::Legt => Measure::LegT,
        MeasureArg::Lagt => Measure::LagT,
        MeasureArg::Glagt => Measure::GLagT {
            alpha: a.alpha,
            beta: a.beta,
        },
        MeasureArg::Fout => Measure::FouT,
        MeasureArg::Foud => Measure::FouD,
    }
}

pub fn split(z: &[C64]) -> (Vec<f64>, Vec<f64>) {
    (
        z.iter().map(|c| c.re).collect(),
        z.iter().map(|c| c.im).collect(),
    )
}

/// The largest state size of the dense HiPPO operators (N² f64: 128 MiB at 4096).
pub const MAX_N: usize = 4096;

pub fn run(args: &HippoArgs) -> Result<(), Failure> {
    use std::fmt::Write as _;
    let mut out = String::new();
    let measure = measure_of(args);
    let n = args.n;
    if n > MAX_N {
        return Err(Failure::Input(format!(
            "--n: at most {MAX_N} (the dense N × N operator), got {n}"
        )));
    }
    if args.form == Form::Dense {
        let (a, b) = hippo::transition(measure, n)?;
        if args.json {
            let _ = writeln!(out, "{}", json!({ "a": linalg::rmat_to_rows(&a), "b": b }));
        } else {
            let _ = writeln!(out, "HiPPO-{measure}, N = {n}, x' = A x + B u");
            let _ = writeln!(out, "A =");
            for row in linalg::rmat_to_rows(&a) {
                let cells: Vec<String> = row.iter().map(|x| format!("{x:>11.5}")).collect();
                let _ = writeln!(out, "{}", cells.join(" "));
            }
            let _ = writeln!(out, "B =");
            for x in &b {
                let _ = writeln!(out, "{x:>11.5}");
            }
            if let Ok(p) = hippo::low_rank(measure, n) {
                let _ = writeln!(out, "P (rank {}, A + PPᵀ normal) =", p.len());
                for row in p {
                    let cells: Vec<String> = row.iter().map(|x| format!("{x:>11.5}")).collect();
                    let _ = writeln!(out, "{}", cells.join(" "));
                }
            }
        }
        return emit(&out);
    }
    if !(args.dt > 0.0 && args.dt.is_finite()) {
        return Err(Failure::Input(format!(
            "--dt must be positive, got {}",
            args.dt
        )));
    }
    let d = Dplr::from_measure(measure, n)?;
    // Output C = first coordinate of the original basis: c = e₀ᵀ V.
    let c: Vec<C64> = (0..n / 2).map(|j| d.v[(0, j)]).collect();
    let (a_re, a_im) = split(&d.lambda);
    let (b_re, b_im) = split(&d.b);
    let (c_re, c_im) = split(&c);
    if args.json {
        let mut obj = json!({
            "kind": if args.form == Form::Dplr { "dplr" } else { "diagonal" },
            "dt": args.dt,
            "a_re": a_re, "a_im": a_im, "b_re": b_re, "b_im": b_im, "c_re": c_re, "c_im": c_im,
        });
        if args.form == Form::Dplr {
            let (p_re, p_im): (Vec<_>, Vec<_>) = d.p.iter().map(|r| split(r)).unzip();
            obj["p_re"] = json!(p_re);
            obj["p_im"] = json!(p_im);
        }
        let _ = writeln!(out, "{obj}");
    } else {
        let _ = writeln!(
            out,
            "HiPPO-{measure}, N = {n}: {} form on N/2 = {} modes (conjugates implied), C = e₀ᵀV",
            if args.form == Form::Dplr {
                "DPLR"
            } else {
                "diagonal"
            },
            n / 2
        );
        let _ = write!(out, "{:>4} {:>24} {:>24} {:>24}", "n", "Λ", "B̃", "C");
        if args.form == Form::Dplr {
            let _ = write!(out, " {:>24}", "P̃ (per rank)");
        }
        out.push('\n');
        let z = |v: C64| format!("{:>11.5}{:+.5}i", v.re, v.im);
        for j in 0..n / 2 {
            let _ = write!(
                out,
                "{j:>4} {:>24} {:>24} {:>24}",
                z(d.lambda[j]),
                z(d.b[j]),
                z(c[j])
            );
            if args.form == Form::Dplr {
                for r in &d.p {
                    let _ = write!(out, " {:>24}", z(r[j]));
                }
            }
            out.push('\n');
        }
    }
    emit(&out)
}
