//! Byte-level document tasks of Long Range Arena: Text (IMDB sentiment, one document of up to
//! 4096 bytes) and Retrieval (AAN citation pairs, two documents of up to 4000 bytes each).
//!
//! ```text
//! tokens     byte b → b + 1 (0 is padding); vocabulary 257; documents cut to max_len bytes
//! IMDB       DIR/train/{pos,neg}/*.txt, DIR/test/{pos,neg}/*.txt (the aclImdb layout); pos = 1, neg = 0;
//!            UTF-8 text; files read in name order
//! AAN        DIR/new_aan_pairs.{train,eval,test}.tsv, no header; per line five tab-separated fields:
//!            label (0/1, also written 0.0/1.0), id1, id2, text1, text2
//! ```
//!
//! IMDB keeps the (cut) bytes of all documents in one buffer. AAN files are large (≈ 150k pairs), so
//! loading validates every line and keeps only each line's byte offset; batches read their lines from
//! the file.

use crate::DataError;
use crate::tasks::{Batch, InputSpec, SeqTask, Split, TargetSpec, TaskSpec};
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Vocabulary of the byte tokenization (256 bytes + padding).
pub const BYTE_VOCAB: usize = 257;

fn file_err(p: &Path, msg: impl Into<String>) -> DataError {
    DataError::File {
        file: p.display().to_string(),
        msg: msg.into(),
    }
}

/// Documents as bytes back to back.
#[derive(Debug, Clone, Default)]
pub struct Docs {
    /// The bytes.
    pub bytes: Vec<u8>,
    /// `offsets[i]..offsets[i + 1]` is document `i`.
    pub offsets: Vec<usize>,
    /// Labels.
    pub labels: Vec<u8>,
}

impl Docs {
    fn new() -> Self {
        Self {
            offsets: vec![0],
            ..Default::default()
        }
    }
    /// Number of documents.
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    /// No documents.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    /// Document `i`.
    pub fn doc(&self, i: usize) -> &[u8] {
        &self.bytes[self.offsets[i]..self.offsets[i + 1]]
    }
}

/// Reads `dir/{pos,neg}/*.txt` (IMDB's layout for one split), cutting each to `max_len` bytes.
pub fn read_imdb_split(dir: &Path, max_len: usize) -> Result<Docs, DataError> {
    let mut docs = Docs::new();
    for (sub, label) in [("neg", 0u8), ("pos", 1u8)] {
        let d = dir.join(sub);
        let rd = std::fs::read_dir(&d).map_err(|e| {
            file_err(
                &d,
                format!("cannot list (IMDB layout: train/pos, train/neg, test/pos, test/neg): {e}"),
            )
        })?;
        let mut files: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "txt"))
            .collect();
        files.sort();
        for p in files {
            let raw = std::fs::read(&p).map_err(|e| file_err(&p, format!("cannot read: {e}")))?;
            if let Err(e) = std::str::from_utf8(&raw) {
                return Err(file_err(
                    &p,
                    format!(
                        "not UTF-8 text (invalid byte at offset {})",
                        e.valid_up_to()
                    ),
                ));
            }
            let n = raw.len().min(max_len);
            docs.bytes.extend_from_slice(&raw[..n]);
            docs.offsets.push(docs.bytes.len());
            docs.labels.push(label);
        }
    }
    if docs.is_empty() {
        return Err(file_err(dir, "no .txt documents in pos/ or neg/"));
    }
    Ok(docs)
}

/// LRA Text: IMDB reviews as byte sequences, binary sentiment.
#[derive(Debug, Clone)]
pub struct ImdbTask {
    train: Docs,
    test: Docs,
    train_idx: Vec<usize>,
    val_idx: Vec<usize>,
    len: usize,
}

impl ImdbTask {
    /// Reads `dir/train` and `dir/test` (or `dir/aclImdb/…`). `val_size` training documents (every
    /// k-th) are held out for validation; 0 validates on the test split, as the LRA papers do.
    pub fn load(dir: &Path, max_len: usize, val_size: usize) -> Result<Self, DataError> {
        let root = if dir.join("aclImdb").join("train").exists() {
            dir.join("aclImdb")
        } else {
            dir.to_path_buf()
        };
        let train = read_imdb_split(&root.join("train"), max_len)?;
        let test = read_imdb_split(&root.join("test"), max_len)?;
        let n = train.len();
        if val_size >= n {
            return Err(DataError::Setting {
                field: "val_size".into(),
                msg: format!("{val_size} validation documents leave none of the {n} for training"),
            });
        }
        let (mut train_idx, mut val_idx) = (Vec::new(), Vec::new());
        let stride = n.checked_div(val_size).unwrap_or(0);
        for i in 0..n {
            if stride > 0 && i % stride == stride - 1 && val_idx.len() < val_size {
                val_idx.push(i);
            } else {
                train_idx.push(i);
            }
        }
        Ok(Self {
            train,
            test,
            train_idx,
            val_idx,
            len: max_len,
        })
    }

    fn pick(&self, split: Split, i: usize) -> (&Docs, usize) {
        match split {
            Split::Train => (&self.train, self.train_idx[i]),
            Split::Val if self.val_idx.is_empty() => (&self.test, i),
            Split::Val => (&self.train, self.val_idx[i]),
            Split::Test => (&self.test, i),
        }
    }
}

fn push_bytes(batch: &mut Batch, doc: &[u8], len: usize) {
    let n = doc.len().min(len);
    batch.tokens.extend(doc[..n].iter().map(|&b| b as u32 + 1));
    batch.tokens.extend(std::iter::repeat_n(0, len - n));
    batch.lengths.push(n.max(1));
}

impl SeqTask for ImdbTask {
    fn describe(&self) -> String {
        format!(
            "LRA Text (IMDB bytes, length ≤ {}; {} train / {} val{} / {} test)",
            self.len,
            self.train_idx.len(),
            self.size(Split::Val),
            if self.val_idx.is_empty() {
                " = test"
            } else {
                ""
            },
            self.test.len()
        )
    }
    fn spec(&self) -> TaskSpec {
        TaskSpec {
            input: InputSpec::Tokens { vocab: BYTE_VOCAB },
            target: TargetSpec::Class { classes: 2 },
            len: self.len,
            pair: false,
        }
    }
    fn size(&self, split: Split) -> usize {
        match split {
            Split::Train => self.train_idx.len(),
            Split::Val if self.val_idx.is_empty() => self.test.len(),
            Split::Val => self.val_idx.len(),
            Split::Test => self.test.len(),
        }
    }
    fn example_len(&self, split: Split, i: usize) -> usize {
        let (d, j) = self.pick(split, i);
        d.doc(j).len().min(self.len).max(1)
    }
    fn fill(&self, split: Split, indices: &[usize], batch: &mut Batch) -> Result<(), DataError> {
        batch.reset();
        for &i in indices {
            let (d, j) = self.pick(split, i);
            push_bytes(batch, d.doc(j), self.len);
            batch.labels.push(d.labels[j] as u32);
        }
        Ok(())
    }
}

// =================================================================================================
// AAN (Retrieval)
// =================================================================================================

/// One parsed AAN line.
#[derive(Debug, Clone, PartialEq)]
pub struct AanPair<'a> {
    /// 0 or 1.
    pub label: u8,
    /// First document id.
    pub id1: &'a str,
    /// Second document id.
    pub id2: &'a str,
    /// First text.
    pub text1: &'a str,
    /// Second text.
    pub text2: &'a str,
}

/// Parses one line of an LRA AAN TSV file (without its newline); `Err` names the field.
pub fn parse_aan_line(line: &[u8]) -> Result<AanPair<'_>, String> {
    let text = std::str::from_utf8(line)
        .map_err(|e| format!("not UTF-8 (invalid byte at column {})", e.valid_up_to() + 1))?;
    let f: Vec<&str> = text.split('\t').collect();
    if f.len() != 5 {
        return Err(format!(
            "expected 5 tab-separated fields (label, id1, id2, text1, text2), found {}",
            f.len()
        ));
    }
    let label = match f[0].trim() {
        "0" | "0.0" => 0,
        "1" | "1.0" => 1,
        other => return Err(format!("field label: {other:?} is not 0 or 1")),
    };
    Ok(AanPair {
        label,
        id1: f[1],
        id2: f[2],
        text1: f[3],
        text2: f[4],
    })
}

/// One AAN file: every line validated at load, only the offsets kept.
#[derive(Debug)]
struct AanFile {
    path: PathBuf,
    file: Mutex<std::fs::File>,
    /// Byte offset and length (without the newline) of each data line, and its 1-based line number.
    lines: Vec<(u64, u32, u32)>,
    labels: Vec<u8>,
    /// max(len(text1), len(text2)) cut to the task length, per pair.
    lens: Vec<u32>,
}

impl AanFile {
    fn open(path: &Path, max_len: usize) -> Result<Self, DataError> {
        let f = std::fs::File::open(path).map_err(|e| {
            file_err(
                path,
                format!("cannot open (Retrieval reads new_aan_pairs.{{train,eval,test}}.tsv): {e}"),
            )
        })?;
        let mut r = BufReader::new(f);
        let (mut lines, mut labels, mut lens) = (Vec::new(), Vec::new(), Vec::new());
        let mut buf = Vec::new();
        let (mut off, mut no) = (0u64, 0u32);
        loop {
            buf.clear();
            let n = crate::read_bounded_line(&mut r, &mut buf)
                .map_err(|e| file_err(path, format!("read error after line {no}: {e}")))?;
            if n == 0 {
                break;
            }
            no += 1;
            let body = buf
                .strip_suffix(b"\n")
                .map(|b| b.strip_suffix(b"\r").unwrap_or(b))
                .unwrap_or(&buf);
            if !body.is_empty() {
                let p = parse_aan_line(body).map_err(|m| DataError::File {
                    file: format!("{}:{no}", path.display()),
                    msg: m,
                })?;
                labels.push(p.label);
                lens.push(p.text1.len().max(p.text2.len()).clamp(1, max_len) as u32);
                lines.push((off, body.len() as u32, no));
            }
            off += n as u64;
        }
        if lines.is_empty() {
            return Err(file_err(path, "no data lines"));
        }
        let file = std::fs::File::open(path).map_err(|e| file_err(path, e.to_string()))?;
        Ok(Self {
            path: path.to_path_buf(),
            file: Mutex::new(file),
            lines,
            labels,
            lens,
        })
    }

    /// The bytes of line `i` (re-read from the file).
    fn read_line(&self, i: usize, buf: &mut Vec<u8>) -> Result<(), DataError> {
        let (off, len, no) = self.lines[i];
        buf.resize(len as usize, 0);
        let mut f = self.file.lock().unwrap_or_else(|e| e.into_inner());
        f.seek(SeekFrom::Start(off))
            .and_then(|_| f.read_exact(buf))
            .map_err(|e| DataError::File {
                file: format!("{}:{no}", self.path.display()),
                msg: format!(
                    "cannot re-read the line validated at load ({e}); was the file changed during the run?"
                ),
            })
    }
}

/// LRA Retrieval: are two AAN papers linked by citation? Two byte documents per example.
#[derive(Debug)]
pub struct AanTask {
    splits: [AanFile; 3],
    len: usize,
}

impl AanTask {
    /// Opens `dir/new_aan_pairs.{train,eval,test}.tsv` (or under `dir/tsv_data/`), each text cut to
    /// `max_len` bytes.
    pub fn load(dir: &Path, max_len: usize) -> Result<Self, DataError> {
        let root = if dir
            .join("tsv_data")
            .join("new_aan_pairs.train.tsv")
            .exists()
        {
            dir.join("tsv_data")
        } else {
            dir.to_path_buf()
        };
        let open = |s: &str| AanFile::open(&root.join(format!("new_aan_pairs.{s}.tsv")), max_len);
        Ok(Self {
            splits: [open("train")?, open("eval")?, open("test")?],
            len: max_len,
        })
    }

    fn file(&self, s: Split) -> &AanFile {
        &self.splits[match s {
            Split::Train => 0,
            Split::Val => 1,
            Split::Test => 2,
        }]
    }
}

impl SeqTask for AanTask {
    fn describe(&self) -> String {
        format!(
            "LRA Retrieval (AAN byte pairs, length ≤ {} each; {} train / {} val / {} test)",
            self.len,
            self.splits[0].labels.len(),
            self.splits[1].labels.len(),
            self.splits[2].labels.len()
        )
    }
    fn spec(&self) -> TaskSpec {
        TaskSpec {
            input: InputSpec::Tokens { vocab: BYTE_VOCAB },
            target: TargetSpec::Class { classes: 2 },
            len: self.len,
            pair: true,
        }
    }
    fn size(&self, split: Split) -> usize {
        self.file(split).labels.len()
    }
    fn example_len(&self, split: Split, i: usize) -> usize {
        self.file(split).lens[i] as usize
    }
    fn fill(&self, split: Split, indices: &[usize], batch: &mut Batch) -> Result<(), DataError> {
        batch.reset();
        let f = self.file(split);
        let mut buf = Vec::new();
        let mut second = Vec::new();
        let mut second_lens = Vec::new();
        for &i in indices {
            f.read_line(i, &mut buf)?;
            let p = parse_aan_line(&buf).map_err(|m| DataError::File {
                file: format!("{}:{}", f.path.display(), f.lines[i].2),
                msg: format!("{m} (the line changed since it was validated at load)"),
            })?;
            push_bytes(batch, p.text1.as_bytes(), self.len);
            let n = p.text2.len().min(self.len);
            second.extend(p.text2.as_bytes()[..n].iter().map(|&b| b as u32 + 1));
            second.extend(std::iter::repeat_n(0u32, self.len - n));
            second_lens.push(n.max(1));
            batch.labels.push(p.label as u32);
        }
        // all first documents, then all second documents
        batch.tokens.extend_from_slice(&second);
        batch.lengths.extend_from_slice(&second_lens);
        Ok(())
    }
}
