//! The SSM description files read by `statespace kernel --from FILE`.
//!
//! ```text
//! {"kind":"diagonal","dt":…,"a_re":[…],"a_im":[…],"b_re":[…],"b_im":[…],"c_re":[…],"c_im":[…]}
//!     N/2 modes of a conjugate-symmetric system; kernel = 2·Re of the sum over them; Re a < 0.
//! {"kind":"dplr", …the same fields…, "p_re":[[…]],"p_im":[[…]]}
//!     p is rank × N/2; A = diag(Λ, Λ̄) − [p; p̄][p; p̄]*, B = [b; b̄], C = [c; c̄] (the system's C,
//!     not C̃); Re a < 0; bilinear only.
//! {"kind":"dense","dt":…,"a":[[…]],"b":[…],"c":[…]}
//!     real N×N.
//! ```
//!
//! Every problem is reported with the file name and the field (and entry) it concerns; unknown
//! fields are rejected so that typos do not pass silently.

use serde_json::{Map, Value};
use statespace_math::C64;
use statespace_math::kernel::{DiagonalSystem, DplrSystem};
use statespace_math::linalg::RMat;
use std::fmt;
use std::path::Path;

/// A problem with an input file: which file, and what is wrong (naming the field).
#[derive(Debug)]
pub struct InputError {
    pub file: String,
    pub msg: String,
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.file, self.msg)
    }
}

impl std::error::Error for InputError {}

/// A system read from a file.
#[derive(Debug, Clone)]
pub enum SsmFile {
    /// Conjugate-symmetric diagonal system on N/2 modes.
    Diagonal { dt: f64, sys: DiagonalSystem },
    /// DPLR system on N/2 modes (bilinear only).
    Dplr { dt: f64, sys: DplrSystem },
    /// Dense real system.
    Dense {
        dt: f64,
        a: RMat,
        b: Vec<f64>,
        c: Vec<f64>,
    },
}

struct Ctx<'a> {
    file: &'a str,
}

impl Ctx<'_> {
    fn err<T>(&self, msg: impl Into<String>) -> Result<T, InputError> {
        Err(InputError {
            file: self.file.to_string(),
            msg: msg.into(),
        })
    }

    fn field<'v>(&self, obj: &'v Map<String, Value>, name: &str) -> Result<&'v Value, InputError> {
        match obj.get(name) {
            Some(v) => Ok(v),
            None => self.err(format!("missing field \"{name}\"")),
        }
    }

    fn number(&self, v: &Value, what: &str) -> Result<f64, InputError> {
        match v.as_f64() {
            Some(x) if x.is_finite() => Ok(x),
            Some(x) => self.err(format!("{what} = {x} is not a finite number")),
            None => self.err(format!("{what}: expected a number, found {}", type_name(v))),
        }
    }

    fn vector(&self, obj: &Map<String, Value>, name: &str) -> Result<Vec<f64>, InputError> {
        let v = self.field(obj, name)?;
        let Some(arr) = v.as_array() else {
            return self.err(format!(
                "field \"{name}\": expected an array of numbers, found {}",
                type_name(v)
            ));
        };
        arr.iter()
            .enumerate()
            .map(|(i, x)| self.number(x, &format!("field \"{name}\"[{i}]")))
            .collect()
    }

    fn matrix(&self, obj: &Map<String, Value>, name: &str) -> Result<Vec<Vec<f64>>, InputError> {
        let v = self.field(obj, name)?;
        let Some(rows) = v.as_array() else {
            return self.err(format!(
                "field \"{name}\": expected an array of arrays of numbers, found {}",
                type_name(v)
            ));
        };
        rows.iter()
            .enumerate()
            .map(|(i, row)| {
                let Some(r) = row.as_array() else {
                    return self.err(format!(
                        "field \"{name}\"[{i}]: expected an array of numbers, found {}",
                        type_name(row)
                    ));
                };
                r.iter()
                    .enumerate()
                    .map(|(j, x)| self.number(x, &format!("field \"{name}\"[{i}][{j}]")))
                    .collect()
            })
            .collect()
    }

    fn same_len(
        &self,
        name: &str,
        got: usize,
        reference: &str,
        want: usize,
    ) -> Result<(), InputError> {
        if got != want {
            return self.err(format!(
                "field \"{name}\" has {got} entries but \"{reference}\" has {want}: they must match"
            ));
        }
        Ok(())
    }

    fn complex(
        &self,
        obj: &Map<String, Value>,
        base: &str,
        n: Option<usize>,
    ) -> Result<Vec<C64>, InputError> {
        let (re_name, im_name) = (format!("{base}_re"), format!("{base}_im"));
        let re = self.vector(obj, &re_name)?;
        let im = self.vector(obj, &im_name)?;
        self.same_len(&im_name, im.len(), &re_name, re.len())?;
        if let Some(n) = n {
            self.same_len(&re_name, re.len(), "a_re", n)?;
        }
        Ok(re
            .into_iter()
            .zip(im)
            .map(|(r, i)| C64::new(r, i))
            .collect())
    }

    fn stable_modes(&self, a: &[C64]) -> Result<(), InputError> {
        self.modes_with_real_part_below(a, 0.0)
    }

    /// Every `Re a_i < bound` (the message says the system must be stable).
    fn modes_with_real_part_below(&self, a: &[C64], bound: f64) -> Result<(), InputError> {
        if a.is_empty() {
            return self.err("field \"a_re\" is empty: a system needs at least one mode");
        }
        if let Some((i, z)) = a.iter().enumerate().find(|(_, z)| z.re >= bound) {
            return self.err(format!(
                "field \"a_re\"[{i}] = {}: the real part of every eigenvalue must be negative (a stable system)",
                z.re
            ));
        }
        Ok(())
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The name of the JSON field whose value contains byte offset `pos` (the nearest `"key":` before it).
fn field_before(text: &str, pos: usize) -> Option<String> {
    let head = &text[..pos.min(text.len())];
    let colon = head.rfind(':')?;
    let before = head[..colon].trim_end();
    let before = before.strip_suffix('"')?;
    let start = before.rfind('"')?;
    Some(before[start + 1..].to_string())
}

fn byte_offset(text: &str, line: usize, column: usize) -> usize {
    let mut off = 0;
    for (i, l) in text.split_inclusive('\n').enumerate() {
        if i + 1 == line {
            return off + column.saturating_sub(1).min(l.len());
        }
        off += l.len();
    }
    text.len()
}

/// Reads and validates an SSM file.
pub fn read(path: &Path) -> Result<SsmFile, InputError> {
    let file = path.display().to_string();
    let ctx = Ctx { file: &file };
    let text = match std::fs::read(path) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(t) => t,
            Err(e) => {
                return ctx.err(format!(
                    "not UTF-8 text (invalid byte at offset {})",
                    e.utf8_error().valid_up_to()
                ));
            }
        },
        Err(e) => return ctx.err(format!("cannot read the file: {e}")),
    };
    parse(&text, &file)
}

/// Parses and validates the text of an SSM file (`file` names it in errors).
pub fn parse(text: &str, file: &str) -> Result<SsmFile, InputError> {
    let ctx = Ctx { file };
    let value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            let (line, col) = (e.line(), e.column());
            let what = match e.classify() {
                serde_json::error::Category::Eof => {
                    "the JSON ends early (truncated file?)".to_string()
                }
                _ => {
                    let full = e.to_string();
                    let suffix = format!(" at line {line} column {col}");
                    format!(
                        "invalid JSON: {}",
                        full.strip_suffix(&suffix).unwrap_or(&full)
                    )
                }
            };
            let field = field_before(text, byte_offset(text, line, col))
                .map(|f| format!(" in field \"{f}\""))
                .unwrap_or_default();
            return ctx.err(format!("line {line}, column {col}{field}: {what}"));
        }
    };
    let Some(obj) = value.as_object() else {
        return ctx.err(format!(
            "expected a JSON object at the top level, found {}",
            type_name(&value)
        ));
    };
    let kind = match ctx.field(obj, "kind")? {
        Value::String(s) => s.as_str(),
        other => {
            return ctx.err(format!(
                "field \"kind\": expected a string, found {}",
                type_name(other)
            ));
        }
    };
    let allowed: &[&str] = match kind {
        "diagonal" => &["kind", "dt", "a_re", "a_im", "b_re", "b_im", "c_re", "c_im"],
        "dplr" => &[
            "kind", "dt", "a_re", "a_im", "b_re", "b_im", "c_re", "c_im", "p_re", "p_im",
        ],
        "dense" => &["kind", "dt", "a", "b", "c"],
        other => {
            return ctx.err(format!(
                "field \"kind\": unknown kind \"{other}\" (expected \"diagonal\", \"dplr\" or \"dense\")"
            ));
        }
    };
    if let Some(k) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        return ctx.err(format!(
            "unknown field \"{k}\" for kind \"{kind}\" (allowed: {})",
            allowed.join(", ")
        ));
    }
    let dt = ctx.number(ctx.field(obj, "dt")?, "field \"dt\"")?;
    if dt <= 0.0 {
        return ctx.err(format!(
            "field \"dt\" = {dt}: the step size must be positive"
        ));
    }
    match kind {
        "diagonal" | "dplr" => {
            let a = ctx.complex(obj, "a", None)?;
            if kind == "diagonal" {
                ctx.stable_modes(&a)?;
            } else {
                // a DPLR system is stable through its low-rank part: the normal part Λ of LegT,
                // LagT and FouT lies on the imaginary axis (Re Λ = 0, rounded to ±1e-16)
                let scale = a.iter().fold(1.0f64, |m, z| m.max(z.norm()));
                ctx.modes_with_real_part_below(&a, 1e-9 * scale)?;
            }
            let b = ctx.complex(obj, "b", Some(a.len()))?;
            let c = ctx.complex(obj, "c", Some(a.len()))?;
            if kind == "diagonal" {
                return Ok(SsmFile::Diagonal {
                    dt,
                    sys: DiagonalSystem { lambda: a, b, c },
                });
            }
            let p_re = ctx.matrix(obj, "p_re")?;
            let p_im = ctx.matrix(obj, "p_im")?;
            if p_re.len() != p_im.len() {
                return ctx.err(format!(
                    "field \"p_im\" has {} rows but \"p_re\" has {}: they must match (rank × N/2)",
                    p_im.len(),
                    p_re.len()
                ));
            }
            let mut p = Vec::with_capacity(p_re.len());
            for (r, (re, im)) in p_re.iter().zip(&p_im).enumerate() {
                ctx.same_len(&format!("p_re[{r}]"), re.len(), "a_re", a.len())?;
                ctx.same_len(&format!("p_im[{r}]"), im.len(), "a_re", a.len())?;
                p.push(re.iter().zip(im).map(|(&x, &y)| C64::new(x, y)).collect());
            }
            // the whole system A = diag(Λ, Λ̄) − [p; p̄][p; p̄]* must be stable
            let m = a.len();
            let full = statespace_math::linalg::CMat::from_fn(2 * m, 2 * m, |i, j| {
                let diag = if i == j {
                    if i < m { a[i] } else { a[i - m].conj() }
                } else {
                    C64::new(0.0, 0.0)
                };
                let u = |r: &Vec<C64>, k: usize| if k < m { r[k] } else { r[k - m].conj() };
                diag - p.iter().map(|r| u(r, i) * u(r, j).conj()).sum::<C64>()
            });
            if m <= 1024 {
                let eig = match statespace_math::ptd::eig_complex(&full) {
                    Ok(e) => e,
                    Err(e) => return ctx.err(format!("eigenvalues of Λ − PP*: {e}")),
                };
                let worst = eig
                    .lambda
                    .iter()
                    .fold(f64::NEG_INFINITY, |w, l| w.max(l.re));
                if worst >= 0.0 {
                    return ctx.err(format!(
                        "the DPLR system diag(Λ) − PP* has an eigenvalue with Re λ = {worst:e} ≥ 0 \
                         (not a stable system)"
                    ));
                }
            }
            Ok(SsmFile::Dplr {
                dt,
                sys: DplrSystem { lambda: a, p, b, c },
            })
        }
        _ => {
            let rows = ctx.matrix(obj, "a")?;
            let n = rows.len();
            if n == 0 {
                return ctx.err("field \"a\" is empty: a system needs N ≥ 1 states");
            }
            if let Some((i, r)) = rows.iter().enumerate().find(|(_, r)| r.len() != n) {
                return ctx.err(format!(
                    "field \"a\"[{i}] has {} entries: A must be square ({n}×{n})",
                    r.len()
                ));
            }
            let b = ctx.vector(obj, "b")?;
            ctx.same_len("b", b.len(), "a", n)?;
            let c = ctx.vector(obj, "c")?;
            ctx.same_len("c", c.len(), "a", n)?;
            let a = RMat::from_fn(n, n, |i, j| rows[i][j]);
            Ok(SsmFile::Dense { dt, a, b, c })
        }
    }
}
