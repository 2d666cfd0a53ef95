//! ListOps (Long Range Arena): nested list operations over the digits 0–9.
//!
//! ```text
//! expression  e := d | [OP e₁ … e_k ]            d ∈ {0,…,9},  k ∈ {2,…,10}
//! OP          [MIN  [MAX  [MED (int of the median: mean of the middle two, truncated)  [SM (sum mod 10)
//! label       the value of the expression (10 classes)
//! length      tokens without parentheses = 1 per digit, 2 + Σ children per operator (LRA's "cost")
//! generator   depth 1 at the root; below max_depth 10 a node is a leaf when U[0,1) > 0.25, at
//!             max_depth always; k = randint(2, max_args) inclusive; keep min < length < max; dedupe
//! file        TSV with the header `Source\tTarget`; the source is LRA's string, with parentheses
//!             around every (left-nested) pair: [MAX 2 9 ] is written `( ( ( [MAX 2 ) 9 ) ] )`
//! tokens      (S4's tokenization: parentheses dropped)  0 = padding, 1–10 = digits 0–9,
//!             11 [MIN, 12 [MAX, 13 [MED, 14 [SM, 15 ]
//! ```
//!
//! Files are read into one token buffer (one byte per token) with offsets — the only in-memory copy.

use crate::DataError;
use crate::tasks::{Batch, InputSpec, SeqTask, Split, TargetSpec, TaskSpec};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashSet;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

/// Vocabulary size of the tokenization (including padding 0).
pub const VOCAB: usize = 16;
/// Token of the first digit (digit d is `DIGIT0 + d`).
pub const DIGIT0: u8 = 1;
/// Token of `]`.
pub const CLOSE: u8 = 15;

/// A ListOps operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// Minimum.
    Min,
    /// Maximum.
    Max,
    /// int(median).
    Med,
    /// Sum modulo 10.
    Sm,
}

impl Op {
    /// All operators, in token order.
    pub const ALL: [Op; 4] = [Op::Min, Op::Max, Op::Med, Op::Sm];

    /// The token string (`[MIN`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Min => "[MIN",
            Op::Max => "[MAX",
            Op::Med => "[MED",
            Op::Sm => "[SM",
        }
    }

    /// Token id.
    pub fn token(self) -> u8 {
        11 + self as u8
    }

    /// Applies the operator to its arguments' values.
    pub fn apply(self, v: &[u8]) -> u8 {
        match self {
            Op::Min => *v.iter().min().expect("operators have ≥ 2 arguments"),
            Op::Max => *v.iter().max().expect("operators have ≥ 2 arguments"),
            Op::Sm => (v.iter().map(|&x| x as u32).sum::<u32>() % 10) as u8,
            Op::Med => {
                let mut s = v.to_vec();
                s.sort_unstable();
                let n = s.len();
                if n % 2 == 1 {
                    s[n / 2]
                } else {
                    // int((a + b) / 2) of non-negative numbers
                    ((s[n / 2 - 1] as u32 + s[n / 2] as u32) / 2) as u8
                }
            }
        }
    }
}

/// A ListOps expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tree {
    /// A digit.
    Leaf(u8),
    /// An operator and its arguments.
    Node(Op, Vec<Tree>),
}

impl Tree {
    /// Tokens without parentheses (LRA's length).
    pub fn len(&self) -> usize {
        match self {
            Tree::Leaf(_) => 1,
            Tree::Node(_, c) => 2 + c.iter().map(Tree::len).sum::<usize>(),
        }
    }

    /// Never empty (a leaf has length 1).
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The value (the label).
    pub fn eval(&self) -> u8 {
        match self {
            Tree::Leaf(d) => *d,
            Tree::Node(op, c) => {
                let v: Vec<u8> = c.iter().map(Tree::eval).collect();
                op.apply(&v)
            }
        }
    }

    /// LRA's string: every (left-nested) pair in parentheses.
    pub fn to_lra_string(&self) -> String {
        let mut s = String::new();
        self.write_lra(&mut s);
        s
    }

    fn write_lra(&self, s: &mut String) {
        match self {
            Tree::Leaf(d) => s.push((b'0' + d) as char),
            Tree::Node(op, c) => {
                // t = (op, c0); t = (t, c_i) …; t = (t, END): one "( " per pair
                for _ in 0..c.len() + 1 {
                    s.push_str("( ");
                }
                s.push_str(op.as_str());
                for child in c {
                    s.push(' ');
                    child.write_lra(s);
                    s.push_str(" )");
                }
                s.push_str(" ] )");
            }
        }
    }
}

/// Generator settings (LRA's defaults, with the length window of the task).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GenOptions {
    /// Deepest level (the root is level 1); nodes there are leaves.
    pub max_depth: usize,
    /// Most arguments of an operator (at least 2).
    pub max_args: usize,
    /// A node below `max_depth` is a leaf when U[0,1) > `value_p`.
    pub value_p: f64,
    /// Keep expressions with `min_length < length < max_length` …
    pub min_length: usize,
    /// … (exclusive bounds, as LRA).
    pub max_length: usize,
}

impl Default for GenOptions {
    fn default() -> Self {
        Self {
            max_depth: 10,
            max_args: 10,
            value_p: 0.25,
            min_length: 500,
            max_length: 2000,
        }
    }
}

/// One random expression by LRA's rules, from depth `depth`.
pub fn generate_tree(rng: &mut impl Rng, depth: usize, o: &GenOptions) -> Tree {
    let r: f64 = if depth < o.max_depth {
        rng.random()
    } else {
        1.0
    };
    if r > o.value_p {
        Tree::Leaf(rng.random_range(0..10))
    } else {
        let k = rng.random_range(2..=o.max_args.max(2));
        let children: Vec<Tree> = (0..k).map(|_| generate_tree(rng, depth + 1, o)).collect();
        let op = Op::ALL[rng.random_range(0..4)];
        Tree::Node(op, children)
    }
}

/// `n` distinct expressions with `min_length < length < max_length` (rejection sampling as LRA);
/// `seen` holds the strings already used (other splits), so splits do not overlap.
pub fn generate(
    n: usize,
    o: &GenOptions,
    rng: &mut impl Rng,
    seen: &mut HashSet<String>,
    mut progress: impl FnMut(usize),
) -> Result<Vec<(String, u8)>, DataError> {
    if o.max_args < 2 || o.max_depth < 1 || o.min_length + 1 >= o.max_length {
        return Err(DataError::Setting {
            field: "listops".into(),
            msg: format!(
                "need max_args ≥ 2, max_depth ≥ 1 and min_length + 1 < max_length (got {o:?})"
            ),
        });
    }
    let mut out = Vec::with_capacity(n.min(1 << 20));
    let mut tries = 0u64;
    const LIMIT: u64 = 200_000_000;
    while out.len() < n {
        tries += 1;
        // after 100,000 draws the acceptance rate says whether the limit can be met: say so now
        // rather than after minutes of drawing
        if tries == 100_000 {
            let rate = out.len() as f64 / tries as f64;
            let need = if rate > 0.0 {
                n as f64 / rate
            } else {
                f64::INFINITY
            };
            if need > LIMIT as f64 {
                return Err(DataError::Setting {
                    field: "listops".into(),
                    msg: format!(
                        "{} of the first 100000 draws have {} < length < {}: {n} expressions would \
                         need ≈ {need:.1e} draws (limit 2e8); widen the length range or change \
                         max_depth / max_args",
                        out.len(),
                        o.min_length,
                        o.max_length
                    ),
                });
            }
        }
        if tries > LIMIT {
            return Err(DataError::Setting {
                field: "listops".into(),
                msg: format!(
                    "found only {} of {n} expressions with {} < length < {} in 2e8 draws",
                    out.len(),
                    o.min_length,
                    o.max_length
                ),
            });
        }
        let t = generate_tree(rng, 1, o);
        let l = t.len();
        if l <= o.min_length || l >= o.max_length {
            continue;
        }
        let s = t.to_lra_string();
        if seen.insert(s.clone()) {
            let label = t.eval();
            out.push((s, label));
            progress(out.len());
        }
    }
    Ok(out)
}

/// Writes `examples` as an LRA ListOps TSV file.
pub fn write_tsv(path: &Path, examples: &[(String, u8)]) -> Result<(), DataError> {
    let err = |e: std::io::Error| DataError::File {
        file: path.display().to_string(),
        msg: e.to_string(),
    };
    let mut w = BufWriter::new(std::fs::File::create(path).map_err(err)?);
    writeln!(w, "Source\tTarget").map_err(err)?;
    for (s, l) in examples {
        writeln!(w, "{s}\t{l}").map_err(err)?;
    }
    w.flush().map_err(err)
}

/// Writes `basic_train.tsv`, `basic_val.tsv`, `basic_test.tsv` into `dir` (LRA's names and
/// sizes by default: 96k / 2k / 2k); returns the three example counts.
pub fn generate_files(
    dir: &Path,
    sizes: [usize; 3],
    o: &GenOptions,
    seed: u64,
    mut progress: impl FnMut(usize),
) -> Result<(), DataError> {
    std::fs::create_dir_all(dir).map_err(|e| DataError::File {
        file: dir.display().to_string(),
        msg: e.to_string(),
    })?;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut seen = HashSet::new();
    let mut done = 0;
    for (name, n) in ["basic_train.tsv", "basic_val.tsv", "basic_test.tsv"]
        .iter()
        .zip(sizes)
    {
        let ex = generate(n, o, &mut rng, &mut seen, |k| progress(done + k))?;
        done += n;
        write_tsv(&dir.join(name), &ex)?;
    }
    Ok(())
}

/// S4's tokenization of a source string (parentheses dropped). `Err` names the offending token.
pub fn tokenize(source: &str, out: &mut Vec<u8>) -> Result<(), String> {
    for tok in source.split_ascii_whitespace() {
        let t = match tok {
            "(" | ")" => continue,
            "]" => CLOSE,
            "[MIN" => Op::Min.token(),
            "[MAX" => Op::Max.token(),
            "[MED" => Op::Med.token(),
            "[SM" => Op::Sm.token(),
            d if d.len() == 1 && d.as_bytes()[0].is_ascii_digit() => {
                DIGIT0 + (d.as_bytes()[0] - b'0')
            }
            other => return Err(format!("unknown token {other:?}")),
        };
        out.push(t);
    }
    Ok(())
}

/// One split of ListOps in memory: all token sequences back to back.
#[derive(Debug, Clone, Default)]
pub struct ListOpsSplit {
    /// Tokens of all examples.
    pub tokens: Vec<u8>,
    /// `offsets[i]..offsets[i + 1]` are example `i`'s tokens.
    pub offsets: Vec<usize>,
    /// Labels 0–9.
    pub labels: Vec<u8>,
    /// The file it came from.
    pub file: PathBuf,
}

impl ListOpsSplit {
    /// Number of examples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    /// No examples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    /// Tokens of example `i`.
    pub fn example(&self, i: usize) -> &[u8] {
        &self.tokens[self.offsets[i]..self.offsets[i + 1]]
    }
    /// Longest example.
    pub fn max_len(&self) -> usize {
        self.offsets
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or(0)
    }
}

/// Reads an LRA ListOps TSV file. Errors name the file, the line and the field.
pub fn read_tsv(path: &Path) -> Result<ListOpsSplit, DataError> {
    let f = std::fs::File::open(path).map_err(|e| DataError::File {
        file: path.display().to_string(),
        msg: format!("cannot open: {e}"),
    })?;
    parse_tsv(path, BufReader::new(f))
}

/// Parses ListOps TSV text from `r`; `path` names it in errors.
pub fn parse_tsv(path: &Path, mut r: impl BufRead) -> Result<ListOpsSplit, DataError> {
    let file = path.display().to_string();
    let at = |line: usize, msg: String| DataError::File {
        file: format!("{file}:{line}"),
        msg,
    };
    let mut s = ListOpsSplit {
        offsets: vec![0],
        file: path.to_path_buf(),
        ..Default::default()
    };
    let mut buf = Vec::new();
    let mut line = 0usize;
    loop {
        buf.clear();
        let n = crate::read_bounded_line(&mut r, &mut buf)
            .map_err(|e| at(line + 1, format!("read error: {e}")))?;
        if n == 0 {
            break;
        }
        line += 1;
        let text = std::str::from_utf8(&buf)
            .map_err(|e| at(line, format!("not UTF-8 (byte {})", e.valid_up_to())))?
            .trim_end_matches(['\n', '\r']);
        if line == 1 {
            let h: Vec<&str> = text.split('\t').collect();
            if h != ["Source", "Target"] {
                return Err(at(
                    1,
                    format!("header: expected \"Source\\tTarget\", found {text:?}"),
                ));
            }
            continue;
        }
        if text.is_empty() {
            continue;
        }
        let mut fields = text.split('\t');
        let (src, tgt) = match (fields.next(), fields.next(), fields.next()) {
            (Some(a), Some(b), None) => (a, b),
            _ => {
                return Err(at(
                    line,
                    format!(
                        "expected 2 tab-separated fields (Source, Target), found {}",
                        text.split('\t').count()
                    ),
                ));
            }
        };
        let label: u8 = match tgt.trim().parse::<u8>() {
            Ok(v) if v < 10 => v,
            _ => {
                return Err(at(
                    line,
                    format!("field Target: {tgt:?} is not a label 0–9"),
                ));
            }
        };
        let before = s.tokens.len();
        tokenize(src, &mut s.tokens).map_err(|m| at(line, format!("field Source: {m}")))?;
        if s.tokens.len() == before {
            return Err(at(line, "field Source: empty".into()));
        }
        s.offsets.push(s.tokens.len());
        s.labels.push(label);
    }
    if line == 0 {
        return Err(DataError::File {
            file,
            msg: "empty file (expected the header Source\\tTarget)".into(),
        });
    }
    Ok(s)
}

/// Accuracy on `test` of the classifier that reads only the root operator (majority label per root
/// operator, fitted on `train`; a bare digit counts as its own class of root). The reference point
/// of the LRA papers' ListOps numbers (≈ 37% on LRA's files).
pub fn root_operator_baseline(train: &ListOpsSplit, test: &ListOpsSplit) -> f64 {
    let root = |s: &ListOpsSplit, i: usize| s.example(i)[0] as usize;
    let mut counts = vec![[0usize; 10]; VOCAB];
    for i in 0..train.len() {
        counts[root(train, i)][train.labels[i] as usize] += 1;
    }
    let pred: Vec<usize> = counts
        .iter()
        .map(|c| (0..10).max_by_key(|&k| (c[k], usize::MAX - k)).unwrap_or(0))
        .collect();
    let hits = (0..test.len())
        .filter(|&i| pred[root(test, i)] == test.labels[i] as usize)
        .count();
    hits as f64 / test.len().max(1) as f64
}

/// ListOps as a sequence task: tokens, padded to the longest example, with per-example lengths.
#[derive(Debug, Clone)]
pub struct ListOpsTask {
    splits: [ListOpsSplit; 3],
    len: usize,
    truncated: usize,
}

impl ListOpsTask {
    /// Reads `basic_{train,val,test}.tsv` from `dir`. `max_len`: the task length (longer examples
    /// are truncated and counted in [`SeqTask::describe`]); `None`: the longest example.
    pub fn load(dir: &Path, max_len: Option<usize>) -> Result<Self, DataError> {
        let mut splits: Vec<ListOpsSplit> = Vec::new();
        for name in ["basic_train.tsv", "basic_val.tsv", "basic_test.tsv"] {
            let p = dir.join(name);
            if !p.exists() {
                return Err(DataError::File {
                    file: p.display().to_string(),
                    msg: "missing (ListOps needs basic_train.tsv, basic_val.tsv and basic_test.tsv; `statespace data listops --out DIR` writes them)".into(),
                });
            }
            let s = read_tsv(&p)?;
            if s.is_empty() {
                return Err(DataError::File {
                    file: p.display().to_string(),
                    msg: "no examples".into(),
                });
            }
            splits.push(s);
        }
        let longest = splits.iter().map(ListOpsSplit::max_len).max().unwrap_or(1);
        let len = max_len.unwrap_or(longest).max(1);
        let truncated = splits
            .iter()
            .map(|s| (0..s.len()).filter(|&i| s.example(i).len() > len).count())
            .sum();
        let [a, b, c]: [ListOpsSplit; 3] = splits.try_into().expect("three splits");
        Ok(Self {
            splits: [a, b, c],
            len,
            truncated,
        })
    }

    /// One split.
    pub fn split(&self, s: Split) -> &ListOpsSplit {
        &self.splits[match s {
            Split::Train => 0,
            Split::Val => 1,
            Split::Test => 2,
        }]
    }
}

impl SeqTask for ListOpsTask {
    fn describe(&self) -> String {
        format!(
            "ListOps ({} train / {} val / {} test, length ≤ {}{}; root-operator baseline {:.1}% on test)",
            self.splits[0].len(),
            self.splits[1].len(),
            self.splits[2].len(),
            self.len,
            if self.truncated > 0 {
                format!(", {} examples truncated", self.truncated)
            } else {
                String::new()
            },
            100.0 * root_operator_baseline(&self.splits[0], &self.splits[2])
        )
    }

    fn spec(&self) -> TaskSpec {
        TaskSpec {
            input: InputSpec::Tokens { vocab: VOCAB },
            target: TargetSpec::Class { classes: 10 },
            len: self.len,
            pair: false,
        }
    }

    fn size(&self, split: Split) -> usize {
        self.split(split).len()
    }

    fn example_len(&self, split: Split, i: usize) -> usize {
        self.split(split).example(i).len().min(self.len)
    }

    fn fill(&self, split: Split, indices: &[usize], batch: &mut Batch) -> Result<(), DataError> {
        batch.reset();
        let s = self.split(split);
        for &i in indices {
            let ex = s.example(i);
            let n = ex.len().min(self.len);
            batch.tokens.extend(ex[..n].iter().map(|&t| t as u32));
            batch.tokens.extend(std::iter::repeat_n(0, self.len - n));
            batch.lengths.push(n);
            batch.labels.push(s.labels[i] as u32);
        }
        Ok(())
    }
}
