//! `statespace transfer`: the frequency response `H(e^{iω}) = Σ_l K_l e^{−iωl}` of a kernel.

use super::kernel::{KernelArgs, kernel_of};
use super::{Failure, emit, fmt_value};
use crate::plot;
use serde_json::json;

pub fn run(args: &KernelArgs) -> Result<(), Failure> {
    let (k, title) = kernel_of(args)?;
    if k.iter().any(|x| !x.is_finite()) {
        return Err(Failure::Compute(
            "the kernel is not finite: the system is unstable".into(),
        ));
    }
    // H(e^{iω}) at ω = πj/L, j = 0 … L, by an FFT of the kernel zero-padded to 2L
    let len = k.len();
    let mut planner = realfft::RealFftPlanner::<f64>::new();
    let fft = planner.plan_fft_forward(2 * len);
    let mut buf = k.clone();
    buf.resize(2 * len, 0.0);
    let mut spec = fft.make_output_vec();
    fft.process(&mut buf, &mut spec)
        .map_err(|e| Failure::Compute(format!("FFT failed: {e}")))?;
    let omega: Vec<f64> = (0..spec.len())
        .map(|j| std::f64::consts::PI * j as f64 / len as f64)
        .collect();
    let mag: Vec<f64> = spec.iter().map(|z| z.norm()).collect();
    let phase: Vec<f64> = spec.iter().map(|z| z.arg()).collect();
    if let Some(path) = &args.plot {
        let db = |m: f64| 20.0 * m.max(1e-300).log10();
        plot::panels_plot(
            path,
            &format!("{title}: frequency response"),
            &[
                plot::Panel {
                    x_label: "ω (rad / sample)",
                    y_label: "|H(e^iω)| (dB)",
                    series: vec![plot::Series {
                        label: "",
                        points: omega.iter().zip(&mag).map(|(w, m)| (*w, db(*m))).collect(),
                    }],
                    markers: false,
                },
                plot::Panel {
                    x_label: "ω (rad / sample)",
                    y_label: "phase of H (rad)",
                    series: vec![plot::Series {
                        label: "",
                        points: omega.iter().copied().zip(phase.iter().copied()).collect(),
                    }],
                    markers: false,
                },
            ],
        )
        .map_err(Failure::Input)?;
    }
    if args.json {
        emit(&format!(
            "{}\n",
            json!({ "omega": omega, "magnitude": mag, "phase": phase })
        ))
    } else {
        let mut out = String::from("# omega magnitude phase\n");
        for j in 0..omega.len() {
            out.push_str(&format!(
                "{} {} {}\n",
                fmt_value(omega[j]),
                fmt_value(mag[j]),
                fmt_value(phase[j])
            ));
        }
        emit(&out)
    }
}
